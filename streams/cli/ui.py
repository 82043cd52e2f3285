"""``distillguard ui``: the analyst's web view over ClickHouse."""

from __future__ import annotations

import argparse
from typing import Any

from streams.cli._common import bounded, clickhouse_options, clickhouse_settings
from streams.clickhouse import Investigation, connect
from streams.settings import redact

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the command to the subcommands ``sub``."""
    p = sub.add_parser("ui", help="the analyst's web view (HTML pages, charts) over ClickHouse")
    clickhouse_options(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; another needs DISTILLGUARD_WEB_TOKEN)",
    )
    p.add_argument(
        "--port", type=bounded(0, 65535), default=6067, help="port (default 6067; 0: any free one)"
    )
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    """The analyst's web view (streams/ui.py) over any store, until Ctrl-C or SIGTERM."""
    import asyncio
    import contextlib
    import signal

    from aiohttp import web

    from streams.settings import is_loopback
    from streams.ui import PREFIX, create_ui

    settings = clickhouse_settings(args)
    token = settings.web_token or None
    if not is_loopback(args.host) and token is None:
        raise ValueError(
            f"--host {args.host} exposes investigation data; set DISTILLGUARD_WEB_TOKEN or bind "
            "127.0.0.1"
        )
    inv = Investigation(connect(settings.clickhouse_url), settings.clickhouse_database)
    app = create_ui(lambda: inv, token, policy=settings.detector_config().policy)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            host, port = runner.addresses[0][:2]
            shown = f"[{host}]" if ":" in host else host
            store = redact(settings.clickhouse_url)
            print(
                f"ui: http://{shown}:{port}{PREFIX}/ on ClickHouse {store}, "
                f"database {settings.clickhouse_database}"
                + (", token required" if token else "")
                + " (Ctrl-C to stop)",
                flush=True,
            )
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    print("ui: stopped", flush=True)
    return 0
