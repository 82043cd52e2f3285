"""The production worker: a Faust app that hosts the streaming engine and serves its views.

Faust runs the process: lifecycle, signals, logging and the web server (``/health``,
``/metrics`` for Prometheus, and the investigation views as JSON). The hot topic does not go
through a Faust agent: its per-message path costs ~150 us here (ENVIRONMENT.md), so
`streams.engine.Engine` consumes it in batches with aiokafka, inside a service Faust starts and
stops with the app.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import orjson
from mode import Service

from schemas.topics import DEAD_LETTERS, ENFORCEMENT, USAGE_EVENTS
from streams.clickhouse import ClickHouseSink, Investigation, StateStore, connect, migrate
from streams.engine import Engine, EngineConfig
from streams.settings import Settings

__all__ = ["create_app", "prometheus"]


def prometheus(engine: Engine) -> str:
    """The engine's counters in the Prometheus text format."""
    m = engine.metrics
    sink = engine.sink.stats
    lines = [
        "# TYPE distillguard_events_in_total counter",
        f"distillguard_events_in_total {m.events_in}",
        "# TYPE distillguard_dead_letters_total counter",
        f"distillguard_dead_letters_total {m.dead_letters}",
        "# TYPE distillguard_duplicates_total counter",
        f"distillguard_duplicates_total {m.duplicates}",
        "# TYPE distillguard_late_events_total counter",
        f"distillguard_late_events_total {m.late}",
        "# TYPE distillguard_windows_scored_total counter",
        *(
            f'distillguard_windows_scored_total{{kind="{k}"}} {v}'
            for k, v in sorted(m.windows_scored.items())
        ),
        "# TYPE distillguard_actions_total counter",
        *(f'distillguard_actions_total{{action="{k}"}} {v}' for k, v in sorted(m.actions.items())),
        "# TYPE distillguard_consumer_lag gauge",
        *(f'distillguard_consumer_lag{{stage="{k}"}} {v}' for k, v in sorted(m.lag.items())),
        "# TYPE distillguard_checkpoints_total counter",
        f"distillguard_checkpoints_total {m.checkpoints}",
        "# TYPE distillguard_clickhouse_inserts_total counter",
        f"distillguard_clickhouse_inserts_total {sink.inserts}",
        "# TYPE distillguard_clickhouse_insert_seconds_total counter",
        f"distillguard_clickhouse_insert_seconds_total {sink.total_insert_seconds:.6f}",
        "# TYPE distillguard_clickhouse_insert_seconds_last gauge",
        f"distillguard_clickhouse_insert_seconds_last {sink.last_insert_seconds:.6f}",
        "# TYPE distillguard_batch_seconds_last gauge",
        f"distillguard_batch_seconds_last {m.batch_seconds:.6f}",
    ]
    return "\n".join(lines) + "\n"


def create_app(settings: Settings) -> faust.App:
    """The Faust app for these settings (Kafka and ClickHouse from them)."""
    if not settings.kafka_bootstrap:
        raise ValueError(
            "the worker needs DISTILLGUARD_KAFKA_BOOTSTRAP (a real Kafka, or one "
            "started with `distillguard broker`)"
        )
    app = faust.App(
        settings.worker_name,
        broker=f"kafka://{settings.kafka_bootstrap}",
        web_host=settings.web_host,
        web_port=settings.web_port,
        store="memory://",
        autodiscover=False,
        topic_allow_declare=False,
    )
    # The contract's topics, declared for Faust users and tooling; the engine reads and writes
    # them itself.
    app.topic(USAGE_EVENTS, value_type=bytes, internal=False)
    app.topic(DEAD_LETTERS, value_type=bytes, internal=False)
    app.topic(ENFORCEMENT, value_type=bytes, internal=False)
    state: dict[str, Any] = {}

    @app.service
    class EngineService(Service):
        """Starts the engine with the app, stops it (checkpoint and commit) with the app."""

        async def on_start(self) -> None:
            client = await asyncio.to_thread(connect, settings.clickhouse_url)
            await asyncio.to_thread(migrate, client, settings.clickhouse_database)
            lock = asyncio.Lock()
            engine = Engine(
                EngineConfig(
                    settings.kafka_bootstrap,
                    detector=settings.detector_config(),
                    checkpoint_seconds=settings.checkpoint_seconds,
                    idle_flush_seconds=settings.idle_flush_seconds,
                    client_id=settings.worker_name,
                    internal_partitions=settings.internal_partitions,
                ),
                ClickHouseSink(client, settings.clickhouse_database),
                StateStore(client, settings.clickhouse_database),
                lock,
            )
            state["engine"] = engine
            state["investigation"] = Investigation(client, settings.clickhouse_database)
            await engine.start()

        async def on_stop(self) -> None:
            engine = state.get("engine")
            if engine is not None:
                await engine.stop()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        engine: Engine | None = state.get("engine")
        failed = engine.failed() if engine else None
        body = {
            "status": "ok" if engine and failed is None else "starting" if not engine else "failed",
            "error": repr(failed) if failed else None,
            "lag": engine.metrics.lag if engine else {},
            "detector_version": settings.detector_config().version,
        }
        return web.json(body, status=200 if body["status"] == "ok" else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        engine = state.get("engine")
        return web.text(prometheus(engine) if engine else "", content_type="text/plain")

    @app.page("/investigate/{kind}")
    async def investigate(web: Any, request: Any, kind: str) -> Any:
        """``/investigate/account?id=...``, ``/investigate/ip-block?id=CIDR``,
        ``/investigate/top?kind=account&minutes=60``: the same views as the CLI, as JSON."""
        inv: Investigation | None = state.get("investigation")
        if inv is None:
            return web.json({"error": "starting"}, status=503)
        engine: Engine = state["engine"]
        q = request.query
        if kind == "top":
            which = "ip_block" if q.get("kind") in ("ip-block", "ip_block") else "account"
            rows = await engine.clickhouse(inv.top, which, int(q.get("minutes", 60)))
            return web.json(_jsonable({"kind": which, "top": rows}))
        if kind not in ("account", "ip-block", "ip_block") or not q.get("id"):
            return web.json(
                {"error": "use /investigate/account?id=... or /ip-block?id=CIDR"}, status=400
            )
        which = "account" if kind == "account" else "ip_block"
        entity_id = q["id"]
        view = {
            "entity_kind": which,
            "entity_id": entity_id,
            "windows": await engine.clickhouse(inv.windows, which, entity_id),
            "actions": await engine.clickhouse(inv.actions, which, entity_id),
            "linked": await engine.clickhouse(inv.linked, which, entity_id),
        }
        return web.json(_jsonable(view))

    return app


def _jsonable(obj: Any) -> Any:
    """Datetimes and other ClickHouse values as JSON-safe values."""
    return orjson.loads(orjson.dumps(obj, default=str))
