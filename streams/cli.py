"""The ``distillguard`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from simulator.evaluation import evaluate, format_report
from simulator.report import write_report
from simulator.traffic import (
    SCENARIOS,
    Scenario,
    simulate,
    traffic_lines,
    write_labels,
    write_traffic,
)
from streams.clickhouse import (
    MAX_MINUTES,
    MAX_ROWS,
    QUERY_SECONDS,
    ClickHouseError,
    ClickHouseSink,
    Investigation,
    MigrationEdited,
    connect,
    migrate,
    one_line,
)
from streams.produce import produce
from streams.replay import open_lines, open_output, replay
from streams.settings import Settings, redact

__all__ = ["main"]


def _detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window-seconds", type=int, help="entity window length (default 60)")
    p.add_argument(
        "--lateness-seconds",
        type=int,
        dest="allowed_lateness_seconds",
        help="allowed lateness before a window closes (default 10)",
    )
    p.add_argument("--seed", type=int, help="model seed (default 42)")
    p.add_argument(
        "--allowlist",
        dest="allowlist_file",
        help="file of account ids / CIDR blocks never to enforce",
    )


def _settings(args: argparse.Namespace) -> Settings:
    names = ("window_seconds", "allowed_lateness_seconds", "seed", "allowlist_file")
    return Settings.from_env().with_overrides(**{n: getattr(args, n, None) for n in names})


def cmd_score(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.input != "-":
        # Fail on a missing or unreadable input before any output file is created or emptied.
        with open(args.input, "rb"):
            pass
    # --clickhouse, else DISTILLGUARD_CLICKHOUSE_URL when it is set; never the embedded default.
    url = args.clickhouse or (
        settings.clickhouse_url if "clickhouse_url" in Settings.given() else None
    )
    sink = _sink(url, settings) if url else None
    if url:
        print(
            f"score: also writing to ClickHouse at {redact(url)}, "
            f"database {settings.clickhouse_database}",
            file=sys.stderr,
        )
    with ExitStack() as stack:
        out = stack.enter_context(open_output(Path(args.output)))
        dead = (
            stack.enter_context(open_output(Path(args.dead_letter))) if args.dead_letter else None
        )
        scores = stack.enter_context(open_output(Path(args.scores))) if args.scores else None
        summary = replay(
            Path(args.input), out, settings.detector_config(), dead, scores=scores, sink=sink
        )
    print(summary.line(), file=sys.stderr)
    if summary.rejected:
        by_field = ", ".join(f"{k} {v}" for k, v in summary.rejected_by_field.most_common())
        where = args.dead_letter or "nowhere (pass --dead-letter FILE to keep them)"
        print(f"rejected lines by field: {by_field}; written to {where}", file=sys.stderr)
    return 0


def _sink(url: str, settings: Settings) -> ClickHouseSink:
    client = connect(url)
    migrate(client, settings.clickhouse_database)
    return ClickHouseSink(client, settings.clickhouse_database)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(
        clickhouse_url=args.clickhouse, clickhouse_database=args.database
    )
    applied = migrate(connect(settings.clickhouse_url), settings.clickhouse_database)
    print(
        f"migrate: {settings.clickhouse_database} at {redact(settings.clickhouse_url)}: "
        + (f"applied {', '.join(applied)}" if applied else "up to date")
    )
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """A read-only query against the store, printed as a table (or JSON): the store's SQL without
    a ClickHouse client, e.g. for an embedded chDB store."""
    settings = Settings.from_env().with_overrides(
        clickhouse_url=args.clickhouse, clickhouse_database=args.database
    )
    client = connect(settings.clickhouse_url)
    result = client.query(
        args.query,
        settings={
            "readonly": 2,  # reads only; 2 still lets the query carry its own limits
            "max_execution_time": QUERY_SECONDS,
            "max_result_rows": MAX_ROWS,
            "result_overflow_mode": "break",
        },
    )
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    if args.json:
        print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_rows("rows", rows, list(result.column_names))
    return 0


_SCORES = {"score", "max_score", "threshold"}
LEGEND = (
    "evidence: extraction behaviours on fixed scales (0 none, 1 one behaviour in full, up to ~4); "
    "novelty: how rare the window is among ordinary ones (0-1);\nscore: calibrated, 0.999 = "
    "riskier than all but 0.1% of ordinary windows; level: 0 none, 1 flagged, 2 throttled, "
    "3 suspended"
)


def _fmt(value: Any, column: str = "") -> str:
    """One format per column: calibrated scores to 6 decimals (their meaning is in the last
    digits: 0.999000 is the top 0.1%), other numbers to 3."""
    if isinstance(value, float):
        return f"{value:.6f}" if column in _SCORES else f"{value:.3f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _print_rows(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    print(f"\n{title} ({len(rows)})")
    if not rows:
        return
    table = [[_fmt(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


def cmd_investigate(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(
        clickhouse_url=args.clickhouse, clickhouse_database=args.database
    )
    inv = Investigation(connect(settings.clickhouse_url), settings.clickhouse_database)
    if args.target == "top":
        kind = args.kind.replace("-", "_")
        rows = inv.top(kind, args.since_minutes, args.limit)
        if args.json:
            print(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode())
        else:
            _print_rows(
                f"top {kind}s, last {args.since_minutes} min of event time",
                rows,
                [
                    "entity_id",
                    "windows_over",
                    "max_evidence",
                    "max_novelty",
                    "max_level",
                    "requests",
                    "at",
                ],
            )
        return 0
    if args.target == "campaign":
        return _investigate_campaign(inv, args)
    kind = "account" if args.target == "account" else "ip_block"
    view = {
        "entity_kind": kind,
        "entity_id": args.entity,
        "windows": inv.windows(kind, args.entity, args.limit),
        "actions": inv.actions(kind, args.entity, args.limit),
        "linked": inv.linked(kind, args.entity, args.limit),
    }
    view["actions"].sort(key=lambda a: a["ts"], reverse=True)  # own and via blocks, one timeline
    if args.json:
        print(orjson.dumps(view, default=str, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not (view["windows"] or view["actions"] or view["linked"]):
        print(f"no {kind} {args.entity!r} in ClickHouse; list them with: investigate top")
        return 1
    print(f"{kind} {args.entity}")
    print(LEGEND)
    _print_rows(
        "recent windows",
        view["windows"],
        ["window_start", "requests", "evidence", "novelty", "score", "level", "drift"],
    )
    print(f"\nactions, newest first ({len(view['actions'])})")
    for a in view["actions"]:
        via = f" (as member of {a['via']})" if a.get("via") else ""
        print(
            f"  {_fmt(a['ts'])}  {a['action']:8s} score {a['score']:.6f} >= "
            f"{a['threshold']:.6f}{via}"
        )
        for r in a["reasons"]:
            if r.get("detail"):
                print(f"      {r['detail']}")
                continue
            base = "-" if r.get("baseline") is None else f"{r['baseline']:g}"
            print(
                f"      {r['feature']:22s} {r['value']:>10g} vs baseline {base:>8s}  "
                f"contribution {r['contribution']:.0%}"
            )
    _print_rows(
        "linked " + ("IP blocks" if kind == "account" else "accounts"),
        view["linked"],
        ["entity", "requests", "first_seen", "last_seen"],
    )
    return 0


def _investigate_campaign(inv: Investigation, args: argparse.Namespace) -> int:
    """One screen answering "why is this a campaign": what holds it together, how it grew,
    what was done about it, and who is in it."""
    cid = args.entity
    view = {
        "entity_kind": "campaign",
        "entity_id": cid,
        "windows": inv.windows("campaign", cid, args.limit),
        "actions": inv.actions("campaign", cid, args.limit),
        "growth": inv.campaign_growth(cid, args.limit),
        "members": inv.campaign_members(cid, args.limit),
    }
    if args.json:
        print(orjson.dumps(view, default=str, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not (view["windows"] or view["growth"]):
        print(f"no campaign {cid!r} in ClickHouse; list them with: investigate top --kind campaign")
        return 1
    print(f"campaign {cid}")
    latest = view["actions"][0] if view["actions"] else None
    if latest is not None:
        when, score = _fmt(latest["ts"]), _fmt(latest["score"], "score")
        print(f"\nwhy ({when}, {latest['action']}, score {score}):")
        for r in latest["reasons"]:
            if r.get("detail"):  # what holds the accounts together
                print(f"        {r['detail']}")
            else:
                print(f"  {r['contribution']:4.0%}  {r['feature']} {r['value']:g}")
    growth = view["growth"]
    if growth:
        peak = max(g["members"] for g in growth)
        print("\nmembers over time (window end, members, joined that window)")
        for g in growth:
            bar = "#" * max(1, round(40 * g["members"] / peak))
            print(f"  {_fmt(g['window_end'])}  {g['members']:6d}  +{g['joined']:<5d} {bar}")
    print(f"\nactions ({len(view['actions'])})")
    for a in view["actions"]:
        n = len(a.get("members") or [])
        score = _fmt(a["score"], "score")
        print(f"  {_fmt(a['ts'])}  {a['action']:8s} score {score}  {n} members named")
    _print_rows(
        "recent windows",
        view["windows"],
        ["window_start", "requests", "evidence", "score", "level"],
    )
    _print_rows(
        "members (first seen first)",
        view["members"],
        ["account_id", "first_window", "last_window", "windows"],
    )
    return 0


def _scenario(args: argparse.Namespace) -> Scenario:
    name = getattr(args, "scenario", None) or "default"
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    s = SCENARIOS[name]
    overrides: dict[str, Any] = {}
    for name in ("seed", "minutes", "benign_accounts", "intensity"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "campaigns", None):
        overrides["campaigns"] = tuple(args.campaigns.split(","))
    return replace(s, **overrides)


def cmd_simulate(args: argparse.Namespace) -> int:
    if bool(args.output) == bool(args.topic):
        raise ValueError("give exactly one of --output FILE or --topic NAME")
    if args.randomize is not None:
        if args.scenario:
            raise ValueError("give --scenario or --randomize, not both")
        from simulator.worlds import describe, draw_world, generate

        spec = draw_world(args.randomize, args.scale)
        print(f"simulate: {describe(spec)}", file=sys.stderr)
        traffic = generate(spec)
        minutes = spec.minutes
    else:
        scenario = _scenario(args)
        print(
            f"simulate: scenario {args.scenario or 'default'}, {scenario.minutes} minutes, "
            f"{scenario.benign_accounts:,} ordinary accounts: generating...",
            file=sys.stderr,
            flush=True,
        )
        traffic = simulate(scenario)
        minutes = scenario.minutes
    print(
        f"simulate: {len(traffic.events):,} events generated; writing...",
        file=sys.stderr,
        flush=True,
    )
    if args.output:
        lines = write_traffic(traffic, Path(args.output), None, args.bad_lines)
        where = args.output
    else:
        bootstrap = args.bootstrap or Settings.from_env().kafka_bootstrap
        if not bootstrap:
            raise ValueError(
                "no Kafka to write to: pass --bootstrap or set "
                "DISTILLGUARD_KAFKA_BOOTSTRAP (start one with `distillguard broker`)"
            )
        lines = produce(
            traffic_lines(traffic, args.bad_lines),
            bootstrap,
            args.topic,
            args.rate,
            auth=Settings.from_env().kafka_auth(),
        )
        where = f"topic {args.topic} at {bootstrap}"
    if args.labels:
        write_labels(traffic, Path(args.labels))
    print(
        f"simulate: {len(traffic.events)} events ({lines} messages) for "
        f"{len(traffic.labels['accounts'])} accounts and {len(traffic.labels['campaigns'])} "
        f"campaigns over {minutes} minutes -> {where}",
        file=sys.stderr,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulated campaigns through Kafka, the worker's engine and ClickHouse (or, with
    --replay, through the detector directly from a file)."""
    if not args.replay:
        from streams.demo import run_demo

        if not getattr(args, "scenario", None):
            args.scenario = "demo"
        return run_demo(_scenario(args), Settings.from_env())
    scenario = _scenario(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distillguard-demo-") as tmp:
        d = Path(tmp)
        print(
            f"demo: simulating {scenario.minutes} minutes of traffic: {scenario.benign_accounts} "
            f"ordinary accounts and {len(scenario.campaigns)} extraction campaigns "
            f"({', '.join(scenario.campaigns)})",
            flush=True,
        )
        traffic = simulate(scenario)
        write_traffic(traffic, d / "events.jsonl.gz", d / "labels.json", 0.001)
        print(f"demo: {len(traffic.events):,} events written; scoring them", flush=True)
        with open(d / "actions.jsonl", "wb") as out, open(d / "dead.jsonl", "wb") as dead:
            summary = replay(
                d / "events.jsonl.gz",
                out,
                Settings.from_env().detector_config(),
                dead,
                progress=sys.stdout.isatty(),
            )
        print(summary.line())
        actions = [orjson.loads(x) for x in (d / "actions.jsonl").read_bytes().splitlines()]
        report = evaluate(traffic.labels, actions)
        print()
        print(format_report(report))
        example = next((a for a in actions if a["action"] == "suspend"), None)
        if example:
            print("\nan enforcement event, as billing and gateway systems receive it:")
            print(orjson.dumps(example, option=orjson.OPT_INDENT_2).decode())
    print(f"\ndemo: done in {time.perf_counter() - started:.0f} s")
    return 0


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in open_lines(path):
        if line.strip():
            yield orjson.loads(line)


def cmd_evaluate(args: argparse.Namespace) -> int:
    labels = orjson.loads(Path(args.labels).read_bytes())
    actions = list(_read_jsonl(Path(args.actions)))
    report = evaluate(labels, actions)
    print(format_report(report))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.report:
        rows = _read_jsonl(Path(args.scores)) if args.scores else None
        inputs = {"labels": args.labels, "actions": args.actions}
        if args.scores:
            inputs["scores"] = args.scores
        min_requests = Settings.from_env().detector_config().policy.min_requests
        path = write_report(Path(args.report), labels, report, actions, rows, inputs, min_requests)
        print(f"report: {path}", file=sys.stderr)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """The production worker (Faust): Kafka and ClickHouse from the settings."""
    import faust

    from streams.app import create_app

    settings = Settings.from_env().with_overrides(
        kafka_bootstrap=args.bootstrap, clickhouse_url=args.clickhouse, web_port=args.web_port
    )
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=args.loglevel)
    worker.execute_from_commandline()  # returns on SIGTERM/SIGINT after stopping the app
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The analyst's web view (streams/ui.py) over any store, until Ctrl-C or SIGTERM."""
    import asyncio
    import contextlib
    import signal

    from aiohttp import web

    from streams.settings import is_loopback
    from streams.ui import PREFIX, create_ui

    settings = Settings.from_env().with_overrides(
        clickhouse_url=args.clickhouse, clickhouse_database=args.database
    )
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


def cmd_broker(args: argparse.Namespace) -> int:
    """The embedded broker alone, for development: runs until Ctrl-C, SIGTERM or --seconds, and
    always stops the broker process it started."""
    import signal

    from infra.broker import EmbeddedBroker, ensure_topics

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill PID` stops it like Ctrl-C, Tansu included
    with EmbeddedBroker(port=args.port) as broker:
        topics = Settings.from_env().topics().with_partitions(args.partitions)
        ensure_topics(broker.bootstrap, topics)
        print(
            f"broker: Tansu (in-memory) listening on {broker.bootstrap}; topics: "
            f"{', '.join(topics)}",
            flush=True,
        )
        print(f"export DISTILLGUARD_KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else None
        try:
            while broker.running and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        if not broker.running:
            print(f"broker: exited on its own; see {broker.log_path}", file=sys.stderr)
            return 1
    print("broker: stopped", flush=True)
    return 0


def _bounded(low: int, high: int) -> Any:
    """An argparse type: an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillguard",
        description="Streaming detector for model-distillation and API-abuse campaigns.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="replay a JSONL(.gz) file of events through the detector")
    p.add_argument("--input", required=True, help="events, JSONL or JSONL.gz ('-' for stdin)")
    p.add_argument("--output", required=True, help="enforcement events, JSONL")
    p.add_argument("--dead-letter", help="rejected lines with their reasons, JSONL")
    p.add_argument("--scores", help="every scored entity window, JSONL(.gz) (for evaluate)")
    p.add_argument(
        "--clickhouse", help="also write to ClickHouse at this URL (chdb:///path, http://host:8123)"
    )
    _detector_options(p)
    p.set_defaults(func=cmd_score)

    def scenario_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--scenario",
            help=f"named mix, one of: {', '.join(SCENARIOS)} "
            "(simulate and score: default; demo: demo)",
        )
        p.add_argument("--seed", type=int, help="traffic seed")
        p.add_argument("--minutes", type=int, help="simulated duration")
        p.add_argument("--benign-accounts", type=int, help="ordinary accounts")
        p.add_argument("--intensity", type=float, help="campaign size multiplier")
        p.add_argument("--campaigns", help="comma-separated campaign archetypes")

    p = sub.add_parser("simulate", help="generate labelled traffic to a file or a Kafka topic")
    p.add_argument("--output", help="events file (.jsonl or .jsonl.gz)")
    p.add_argument("--topic", help="Kafka topic to write to instead (e.g. api-usage-events)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s to a topic (0 = max)")
    p.add_argument("--labels", help="labels file (JSON)")
    p.add_argument("--bad-lines", type=float, default=0.0, help="share of malformed lines")
    p.add_argument(
        "--randomize",
        type=int,
        metavar="SEED",
        help="draw a whole world from wide ranges (campaign share 1-40%%, start, rates, IP and "
        "payment strategies, benign mix, disorder) instead of a named scenario",
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="with --randomize: size multiplier (default 1)"
    )
    scenario_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("evaluate", help="recall, false positives and time to detection")
    p.add_argument("--labels", required=True, help="labels written by simulate")
    p.add_argument("--actions", required=True, help="enforcement events, JSONL(.gz)")
    p.add_argument("--scores", help="scored windows from score --scores (timeline plot)")
    p.add_argument("--report", help="directory for index.html and report.json")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.set_defaults(func=cmd_evaluate)

    def clickhouse_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--clickhouse", help="ClickHouse URL (default: settings)")
        p.add_argument("--database", help="database (default: distillguard)")

    p = sub.add_parser("migrate", help="apply the ClickHouse DDL (schemas/ddl)")
    clickhouse_options(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("sql", help="a read-only SQL query against the store, as a table")
    p.add_argument("query", help='e.g. "SELECT count() FROM distillguard.entity_scores"')
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    clickhouse_options(p)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("investigate", help="why an entity was scored as it was (ClickHouse)")
    p.add_argument("target", choices=["account", "ip-block", "campaign", "top"])
    p.add_argument("entity", nargs="?", help="account id, CIDR block or campaign id")
    p.add_argument(
        "--kind",
        choices=["account", "ip-block", "campaign"],
        default="account",
        help="for top: which entities",
    )
    p.add_argument(
        "--since-minutes",
        type=_bounded(1, MAX_MINUTES),
        default=60,
        help=f"for top: event-time range (1..{MAX_MINUTES})",
    )
    p.add_argument(
        "--limit", type=_bounded(1, MAX_ROWS), default=20, help=f"rows per list (1..{MAX_ROWS})"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    clickhouse_options(p)
    p.set_defaults(func=cmd_investigate)

    p = sub.add_parser("ui", help="the analyst's web view (HTML pages, charts) over ClickHouse")
    clickhouse_options(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; another needs DISTILLGUARD_WEB_TOKEN)",
    )
    p.add_argument(
        "--port", type=_bounded(0, 65535), default=6067, help="port (default 6067; 0: any free one)"
    )
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("worker", help="run the streaming worker (Faust) against Kafka")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    p.add_argument("--clickhouse", help="ClickHouse URL (default: settings)")
    p.add_argument("--web-port", type=int, help="port of /health, /metrics (default 6066)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("broker", help="start the embedded Kafka-API broker (Tansu) alone")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--partitions", type=int, default=8, help="partitions of the main topics")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("demo", help="simulated campaigns through the whole pipeline, summarised")
    p.add_argument(
        "--replay",
        action="store_true",
        help="skip Kafka and ClickHouse: replay a simulated file through the detector",
    )
    scenario_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "investigate" and args.target != "top" and not args.entity:
        parser.error(f"investigate {args.target} needs the entity id")
    # A ClickHouse failure reaches the person as one line below, not as the driver's warnings.
    logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)
    try:
        code: int = args.func(args)
    except (OSError, ValueError, MigrationEdited) as exc:
        print(f"distillguard {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except ClickHouseError as exc:  # after a connection was made: a query or insert failed
        print(f"distillguard {args.command}: error: ClickHouse: {one_line(exc)}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
