"""The production worker: a Faust app that hosts the streaming engine and serves its views.

Faust runs the process: lifecycle, signals, logging and the web server (``/health``,
``/metrics`` for Prometheus, and the investigation views as JSON). The hot topic does not go
through a Faust agent: its per-message path costs ~150 us here (ENVIRONMENT.md), so
`streams.engine.Engine` consumes it in batches with aiokafka, inside a service Faust starts and
stops with the app.

The web server binds ``DISTILLGUARD_WEB_HOST`` (127.0.0.1 unless set). With
``DISTILLGUARD_WEB_TOKEN`` set, every route but ``/health`` needs ``Authorization: Bearer
<token>``; a host other than loopback without a token is refused at start. Every route checks
its parameters (400 with a one-line JSON error), and investigations are bounded in rows and time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
import mode
import orjson
from aiohttp import web as aioweb
from faust.web import Web
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from mode import Service

from infra.kafka_auth import KafkaAuth
from streams.clickhouse import (
    MAX_MINUTES,
    MAX_ROWS,
    ClickHouseError,
    ClickHouseSink,
    Investigation,
    StateStore,
    connect,
    migrate,
    one_line,
)
from streams.engine import Engine, EngineConfig
from streams.memory import settle_heap
from streams.metrics import WorkerCollector, render
from streams.params import BadRequest, check_id, check_params, int_param
from streams.settings import Settings, is_loopback, redact
from streams.ui import is_ui_path, register_ui

log = logging.getLogger("distillguard.worker")

__all__ = ["create_app", "prometheus"]

#: Longest entity id a view accepts (account ids and CIDR blocks are far shorter).


def _entity_id(query: Mapping[str, str], kind: str) -> str:
    """The ``id`` parameter: present, bounded, and a CIDR block for ``ip_block``."""
    entity = query.get("id", "")
    if not entity:
        raise BadRequest("use /investigate/account?id=... or /investigate/ip-block?id=CIDR")
    return check_id(entity, cidr=kind == "ip_block", what="id")


def _bearer(token: str) -> Any:
    """aiohttp middleware: every path but ``/health`` and the web view (which checks the same
    header, or its login cookie, itself) needs ``Authorization: Bearer <token>``, compared in
    constant time."""
    expected = token.encode()

    @aioweb.middleware
    async def check(
        request: aioweb.Request, handler: Callable[[aioweb.Request], Awaitable[Any]]
    ) -> Any:
        if request.path != "/health" and not is_ui_path(request.path):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if not (
                scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)
            ):
                return aioweb.json_response(
                    {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return check


def prometheus(engine: Engine) -> str:
    """The engine's counters in the Prometheus text format (`streams.metrics`)."""
    return render(WorkerCollector(engine.metrics, engine.sink.stats, engine.degraded))


def faust_credentials(auth: KafkaAuth) -> faust.types.auth.CredentialsT | None:
    """The Faust app's own Kafka client authenticates like the engine's (None: PLAINTEXT).

    Examples
    --------
    >>> faust_credentials(KafkaAuth()) is None
    True
    >>> creds = faust_credentials(KafkaAuth("SASL_PLAINTEXT", "SCRAM-SHA-256", "u", "p"))
    >>> creds.protocol.value, creds.mechanism.value, creds.username
    ('SASL_PLAINTEXT', 'SCRAM-SHA-256', 'u')
    """
    if auth.sasl:
        return faust.SASLCredentials(
            username=auth.username,
            password=auth.password,
            mechanism=auth.sasl_mechanism,
            ssl_context=auth.ssl_context(),
        )
    context = auth.ssl_context()
    return faust.SSLCredentials(context) if context is not None else None


def create_app(settings: Settings) -> faust.App:
    """The Faust app for these settings (Kafka and ClickHouse from them)."""
    if not is_loopback(settings.web_host) and not settings.web_token:
        raise ValueError(
            f"DISTILLGUARD_WEB_HOST={settings.web_host} exposes investigation data; "
            "set DISTILLGUARD_WEB_TOKEN or bind 127.0.0.1"
        )
    if not settings.kafka_bootstrap:
        raise ValueError(
            "the worker needs DISTILLGUARD_KAFKA_BOOTSTRAP (a real Kafka, or one "
            "started with `distillguard broker`)"
        )
    auth = settings.kafka_auth()
    topics = settings.topics()

    class App(faust.App):
        def on_webserver_init(self, web: Web) -> None:
            web_app = cast(AiohttpWeb, web).web_app
            if settings.web_token:
                web_app.middlewares.append(_bearer(settings.web_token))
            state["add_rest_routes"](web_app)
            # the analyst's pages (/ui/), sharing the engine's ClickHouse lock
            register_ui(
                web_app,
                lambda: state.get("investigation"),
                settings.web_token or None,
                run=lambda fn, *a: state["engine"].clickhouse(fn, *a),
                policy=settings.detector_config().policy,
            )

    app = App(
        settings.worker_name,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(auth),
        # the host of the worker's URL (an IPv6 address in brackets), and the interface to bind
        web_host=f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host,
        web_bind=settings.web_host,  # Faust's own default binds every interface
        web_port=settings.web_port,
        store="memory://",
        # The app's own consumer group has no agents to balance, but a replacement worker's app
        # waits in it for a killed worker's session to expire before the engine starts: with
        # Faust's 60 s that took ~115 s after a SIGKILL. The engine's groups use 6 s too.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        autodiscover=False,
        topic_allow_declare=False,
    )
    # The contract's topics, declared for Faust users and tooling; the engine reads and writes
    # them itself.
    app.topic(topics.usage, value_type=bytes, internal=False)
    app.topic(topics.dead_letters, value_type=bytes, internal=False)
    app.topic(topics.enforcement, value_type=bytes, internal=False)
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
                    memory_return_seconds=(
                        settings.memory_return_seconds
                        if settings.memory_return_seconds >= 0
                        else None
                    ),
                    idle_flush_seconds=settings.idle_flush_seconds,
                    client_id=settings.worker_name,
                    internal_partitions=settings.internal_partitions,
                    replication_factor=settings.topic_replication_factor,
                    max_message_bytes=settings.max_message_bytes,
                    max_future_skew_ms=int(settings.max_future_skew_seconds * 1000) or None,
                    max_past_skew_ms=int(settings.max_past_skew_seconds * 1000) or None,
                    output_give_up_seconds=settings.output_give_up_seconds,
                    kafka_auth=auth,
                    topics=topics,
                ),
                ClickHouseSink(client, settings.clickhouse_database),
                StateStore(client, settings.clickhouse_database),
                lock,
            )
            state["engine"] = engine
            state["investigation"] = Investigation(client, settings.clickhouse_database)
            await engine.start()
            settle_heap()
            # WARNING level so it shows at every log level a person runs the worker with
            log.warning(
                "distillguard worker ready: reading %s at %s, ClickHouse %s database %s, "
                "HTTP on http://%s:%d (/health, /metrics, /investigate)",
                topics.usage,
                settings.kafka_bootstrap,
                redact(settings.clickhouse_url),
                settings.clickhouse_database,
                settings.web_host,
                settings.web_port,
            )

        async def on_stop(self) -> None:
            engine = state.get("engine")
            if engine is not None:
                await engine.stop()

        @Service.task
        async def _exit_when_failed(self) -> None:
            """A stage that stopped (outputs that kept failing, a topic it cannot read) takes
            the worker down, non-zero, for its supervisor to restart it; the stage logged why.

            The stop is the one SIGTERM makes (the engine checkpoints what was published, the
            consumers leave their groups); the worker then exits 1 with the stage's error as
            its crash reason."""
            while not self.should_stop:
                engine: Engine | None = state.get("engine")
                failed = engine.failed() if engine else None
                if failed is not None:
                    worker = self.beacon.root.data if self.beacon.root is not None else None
                    if isinstance(worker, mode.Worker):
                        worker.crash_reason = failed
                        os.kill(os.getpid(), signal.SIGTERM)
                    else:  # not run by a worker: crash the app
                        await self.crash(failed)
                    return
                await self.sleep(1.0)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        try:
            check_params(request.query, set())
        except BadRequest as exc:
            return web.json({"error": str(exc)}, status=400)
        # ok (200); starting, degraded (outputs failing and being retried; the reason says
        # what, and the worker exits on its own if they keep failing) or failed (503).
        engine: Engine | None = state.get("engine")
        failed = engine.failed() if engine else None
        degraded = engine.degraded() if engine and failed is None else None
        status = (
            "starting" if not engine else "failed" if failed else "degraded" if degraded else "ok"
        )
        body = {
            "status": status,
            "error": redact(repr(failed)) if failed else None,
            "reason": redact(degraded) if degraded else None,
            "lag": engine.metrics.lag if engine else {},
            "detector_version": settings.detector_config().version,
        }
        return web.json(body, status=200 if status == "ok" else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        try:
            check_params(request.query, set())
        except BadRequest as exc:
            return web.json({"error": str(exc)}, status=400)
        engine = state.get("engine")
        return web.text(prometheus(engine) if engine else "", content_type="text/plain")

    async def answer(kind: str, q: Mapping[str, str]) -> tuple[Any, int]:
        """``/investigate/account?id=...``, ``/investigate/ip-block?id=CIDR``,
        ``/investigate/campaign?id=...``, ``/investigate/top?kind=account&minutes=60``: the same
        views as the CLI, as JSON.
        Bad parameters answer 400, an unknown view or entity 404, a failed query 503, each with
        a one-line ``{"error": ...}``."""
        if kind not in ("top", "account", "ip-block", "ip_block", "campaign"):
            return {
                "error": f"no view {kind[:40]!r}; use /investigate/account, ip-block, "
                "campaign or top"
            }, 404
        inv: Investigation | None = state.get("investigation")
        if inv is None:
            return {"error": "starting"}, 503
        engine: Engine = state["engine"]
        try:
            if kind == "top":
                check_params(q, {"kind", "minutes", "limit"})
                which = {
                    "account": "account",
                    "ip-block": "ip_block",
                    "ip_block": "ip_block",
                    "campaign": "campaign",
                }
                if q.get("kind", "account") not in which:
                    raise BadRequest("kind must be account, ip-block or campaign")
                top_kind = which[q.get("kind", "account")]
                minutes = int_param(q, "minutes", 60, 1, MAX_MINUTES)
                limit = int_param(q, "limit", 20, 1, MAX_ROWS)
            else:
                check_params(q, {"id", "limit"})
                entity_kind = kind if kind in ("account", "campaign") else "ip_block"
                entity_id = _entity_id(q, entity_kind)
                # each list keeps its own default length unless a limit is given
                bound = (int_param(q, "limit", 0, 1, MAX_ROWS),) if "limit" in q else ()
        except BadRequest as exc:
            return {"error": str(exc)}, 400
        try:
            if kind == "top":
                rows = await engine.clickhouse(inv.top, top_kind, minutes, limit)
                return _jsonable({"kind": top_kind, "top": rows}), 200
            view = {
                "entity_kind": entity_kind,
                "entity_id": entity_id,
                "windows": await engine.clickhouse(inv.windows, entity_kind, entity_id, *bound),
                "actions": await engine.clickhouse(inv.actions, entity_kind, entity_id, *bound),
            }
            if entity_kind == "campaign":
                # how it grew (members and joiners per window) and who is in it
                view["growth"] = await engine.clickhouse(inv.campaign_growth, entity_id, *bound)
                view["members"] = await engine.clickhouse(inv.campaign_members, entity_id, *bound)
                found = view["windows"] or view["growth"]
            else:
                view["linked"] = await engine.clickhouse(inv.linked, entity_kind, entity_id, *bound)
                found = view["windows"] or view["actions"] or view["linked"]
        except ClickHouseError as exc:
            return {"error": f"ClickHouse: {one_line(exc)}"}, 503
        if not found:
            return {"error": f"no {entity_kind} {entity_id[:80]!r} in ClickHouse"}, 404
        return _jsonable(view), 200

    @app.page("/investigate/{kind}")
    async def investigate(web: Any, request: Any, kind: str) -> Any:
        """The views by query parameter (``/investigate/account?id=...``); see `answer`."""
        doc, status = await answer(kind, request.query)
        return web.json(doc, status=status)

    def rest(kind: str, with_id: bool) -> Callable[[aioweb.Request], Awaitable[Any]]:
        async def handler(request: aioweb.Request) -> Any:
            q = dict(request.query)
            if "id" in q:
                return aioweb.json_response(
                    {"error": "give the id in the path, not as ?id="}, status=400
                )
            if with_id:
                q["id"] = request.match_info["id"]
            doc, status = await answer(kind, q)
            return aioweb.json_response(doc, status=status)

        return handler

    def add_rest_routes(web_app: aioweb.Application) -> None:
        """REST-style paths (documented in the README): ``/api/accounts/{id}``,
        ``/api/ip-blocks/{cidr}`` (the CIDR's slash included), ``/api/campaigns/{id}``,
        ``/api/top?kind=&minutes=&limit=``."""
        router = web_app.router
        router.add_get("/api/accounts/{id}", rest("account", True))
        router.add_get("/api/ip-blocks/{id:.+}", rest("ip-block", True))
        router.add_get("/api/campaigns/{id}", rest("campaign", True))
        router.add_get("/api/top", rest("top", False))

    state["add_rest_routes"] = add_rest_routes

    return app


def _jsonable(obj: Any) -> Any:
    """Datetimes and other ClickHouse values as JSON-safe values."""
    return orjson.loads(orjson.dumps(obj, default=str))
