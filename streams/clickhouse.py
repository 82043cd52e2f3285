"""ClickHouse through clickhouse-connect only: chDB in-process by default, a server in production.

- `connect` turns ``chdb:///path`` or ``http(s)://user:password@host:port`` into a client.
- `migrate` applies the numbered DDL files of ``schemas/ddl`` once each, recording them in
  ``schema_migrations``; the same files run against chDB and a server.
- `ClickHouseSink` writes a batch of detector output as column-oriented inserts, one per table
  and `ROWS_PER_INSERT` rows.
- `Investigation` holds the parameterized queries behind ``distillguard investigate`` and the
  worker's JSON views. Values never enter SQL text.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence, Sized
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import resources
from typing import Any

import clickhouse_connect
import cramjam
import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from models.detector import DetectorOutput, EnforcementAction
from schemas.ddl import KEPT_BY, SCORES_KEPT_DAYS
from schemas.dead_letters import DeadLetter
from streams.metrics import SinkStats
from streams.settings import redact

__all__ = [
    "MAX_MINUTES",
    "MAX_ROWS",
    "QUERY_SECONDS",
    "ROWS_PER_INSERT",
    "CheckpointUnreadable",
    "ClickHouseError",
    "ClickHouseSink",
    "ClickHouseUnavailable",
    "Investigation",
    "MigrationEdited",
    "StateStore",
    "connect",
    "migrate",
    "one_line",
    "pack_state",
]

#: Bounds of an investigation: rows per query, event-time range of ``top``, seconds per query.
MAX_ROWS = 1000
MAX_MINUTES = 7 * 24 * 60
QUERY_SECONDS = 10

#: Rows of entity scores or links per insert. A window of a million accounts is written as ~60
#: inserts whose Python values (a float object per number, a dict of features per row) are built
#: one insert at a time: built all at once, they took ~1.3 GB of small objects, and the few
#: that outlived them kept most of that memory from ever being reused or handed back (a worker
#: at 1M accounts). Tables are ReplacingMergeTree, so a retry that writes an insert again
#: leaves one row.
ROWS_PER_INSERT = 16_384
#: ClickHouse refuses an insert whose rows fall in more than 100 partitions
#: (``max_partitions_per_insert_block``); tables are partitioned by the day or month of this
#: column, so an insert is cut where its rows pass this many days (a replayed history, or a
#: gateway whose clock jumped, brings windows of many days into one batch).
DAYS_PER_INSERT = 100
_PARTITIONED_BY = {
    "entity_scores": "window_start",
    "entity_links": "window_start",
    "campaign_members": "window_end",
    "enforcement_actions": "ts",
    "dead_letters": "received_at",
}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _database(name: str) -> str:
    if not _IDENT.fullmatch(name):
        raise ValueError(f"not a valid ClickHouse database name: {name!r}")
    return name


class ClickHouseUnavailable(ConnectionError):
    """The ClickHouse of a URL cannot be reached or opened; the message is one line for a person,
    credentials redacted."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The root cause of ``exc`` as one short line, credentials redacted: for a refused
    connection ``[Errno 111] Connection refused`` rather than the whole retry story.

    Examples
    --------
    >>> try:
    ...     try:
    ...         raise ConnectionRefusedError(111, "Connection refused")
    ...     except OSError as e:
    ...         raise RuntimeError("pool for http://u:pw@h failed\\nmore") from e
    ... except RuntimeError as e:
    ...     print(one_line(e))
    [Errno 111] Connection refused
    """
    root: BaseException = exc
    seen = {id(root)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    text = str(root).strip() or str(exc).strip() or type(root).__name__
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


_STRERROR = re.compile(r"strerror: ([^.(]+)")


def _unavailable(url: str, exc: BaseException, said: bytes = b"") -> ClickHouseUnavailable:
    """One line for a person: what failed and the fix. ``said``: what the embedded engine
    wrote to stderr meanwhile (its exception only says "Error initializing EmbeddedServer").

    >>> said = b"Cannot open file /d/status: , errno: 30, strerror: Read-only file system. (X)"
    >>> why = _unavailable("chdb:///d", RuntimeError("Error initializing EmbeddedServer"), said)
    >>> print(str(why).split(";")[0])
    cannot open the chDB path /d: Read-only file system
    """
    message = str(exc)
    engine_said = said.decode("utf-8", "replace")
    if url.startswith("chdb://") and "Error initializing EmbeddedServer" in message:
        path = redact(url.removeprefix("chdb://").split("?", 1)[0])
        why = _STRERROR.search(engine_said)
        if why is not None and "Another server instance" not in engine_said:
            return ClickHouseUnavailable(
                f"cannot open the chDB path {path}: {why.group(1).strip()}; make the path "
                "writable, or pass another chdb:///path with --clickhouse / "
                "DISTILLGUARD_CLICKHOUSE_URL"
            )
        return ClickHouseUnavailable(
            f"the chDB path {path} is in use by another process (chDB opens a path in "
            "one process at a time): if a worker holds it, use the worker's web view "
            "(http://127.0.0.1:6066/ui/) or API (/api/top, /api/accounts/ID); or stop that "
            "process, or pass another chdb:///path with --clickhouse / DISTILLGUARD_CLICKHOUSE_URL"
        )
    if url.startswith("chdb://") and "cannot connect with different path" in message:
        return ClickHouseUnavailable(
            f"cannot open chDB at {redact(url)}: this process already has another chDB path "
            "open (chDB allows one path per process)"
        )
    return ClickHouseUnavailable(
        f"cannot reach ClickHouse at {redact(url)}: {one_line(exc)}; check --clickhouse / "
        "DISTILLGUARD_CLICKHOUSE_URL"
    )


@contextmanager
def _native_stderr() -> Iterator[bytearray]:
    """Hold back what native code writes to file descriptor 2 (chDB prints its own exception
    there before raising it), so a failure to open reaches the person as one line; the bytes
    held back are in the yielded buffer once the block has ended."""
    sys.stderr.flush()
    captured = bytearray()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            captured.extend(held.read())


def connect(url: str) -> Client:
    """A clickhouse-connect client for ``chdb:///path`` (embedded) or ``http(s)://...``.

    A server that cannot be reached, or a chDB path another process holds, raises
    `ClickHouseUnavailable` with one line for a person; no error message carries credentials.
    """
    if not url.startswith(("chdb://", "http://", "https://", "clickhouse://")):
        raise ValueError(
            "ClickHouse URL must start with chdb://, http:// or https:// (lowercase), "
            f"got {redact(url)!r}"
        )
    said = bytearray()
    try:
        if not url.startswith("chdb://"):
            return clickhouse_connect.get_client(dsn=url)
        with _native_stderr() as said:
            client = clickhouse_connect.get_client(dsn=url)
        if said:  # opened: pass on whatever the engine said
            os.write(2, bytes(said))
        return client
    except ClickHouseError as exc:
        raise _unavailable(url, exc, bytes(said)) from exc
    except ValueError as exc:  # e.g. a port that is not a number
        raise ValueError(f"not a valid ClickHouse URL {redact(url)!r}: {one_line(exc)}") from None


def _migrations() -> list[tuple[int, str, str]]:
    files = []
    for entry in resources.files("schemas.ddl").iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            files.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(files)


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


class MigrationEdited(RuntimeError):
    """A migration file changed after it was applied: the store and the code disagree."""


def migrate(client: Client, database: str = "distillguard") -> list[str]:
    """Apply every migration not yet applied; returns the names applied now.

    Each applied migration is recorded with the SHA-256 of its file. A file edited after it was
    applied raises `MigrationEdited` instead of leaving the store silently different from what
    the code describes (the fix is a new numbered migration). Migrations recorded before
    checksums existed take the current file's checksum on first sight. (A library runner such as
    clickhouse-migrations speaks the native protocol, which chDB does not; this one goes through
    clickhouse-connect like everything else.)
    """
    db = _database(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version"
    )
    client.command(
        f"ALTER TABLE {db}.schema_migrations ADD COLUMN IF NOT EXISTS checksum String DEFAULT ''"
    )
    recorded = {
        int(row[0]): str(row[1])
        for row in client.query(
            f"SELECT version, argMax(checksum, applied_at) FROM {db}.schema_migrations "
            "GROUP BY version"
        ).result_rows
    }
    applied = []
    for version, name, sql in _migrations():
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        if version in recorded:
            if recorded[version] and recorded[version] != checksum:
                raise MigrationEdited(
                    f"migration {version:04d}_{name}.sql was edited after it was applied to "
                    f"{db} (checksum {recorded[version][:12]} != {checksum[:12]}): restore the "
                    "file and put the change in a new numbered migration"
                )
            if not recorded[version]:  # recorded before checksums: trust the file once
                client.insert(
                    f"{db}.schema_migrations",
                    [[version, name, datetime.now(UTC), checksum]],
                    column_names=["version", "name", "applied_at", "checksum"],
                )
            continue
        for stmt in _statements(sql):
            client.command(stmt.replace("{database}", db))
        client.insert(
            f"{db}.schema_migrations",
            [[version, name, datetime.now(UTC), checksum]],
            column_names=["version", "name", "applied_at", "checksum"],
        )
        applied.append(f"{version:04d}_{name}")
    return applied


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class ClickHouseSink:
    """Batches detector output into one insert per table (blocking: run it off the event loop)."""

    def __init__(self, client: Client, database: str = "distillguard") -> None:
        self.client = client
        self.db = _database(database)
        self.stats = SinkStats()

    def _insert(self, table: str, columns: dict[str, list[Any]]) -> None:
        """Insert named columns (all of one length) into ``table``: one request, or one per
        `DAYS_PER_INSERT` days of the table's partitioning column."""
        values = list(columns.values())
        if not values or not values[0]:
            return
        assert len({len(v) for v in values}) == 1, f"{table}: columns of different lengths"
        for part in _by_days(columns, _PARTITIONED_BY.get(table)):
            self._request(table, part)
        if table in KEPT_BY:  # once written: a retried insert is not counted twice
            self._count_expired(table, columns[KEPT_BY[table]])

    def _count_expired(self, table: str, at: list[datetime]) -> None:
        """Count the rows ClickHouse's TTL will drop as they are written: their windows are
        older than `SCORES_KEPT_DAYS` (a replay of old history)."""
        cut = datetime.now(UTC) - timedelta(days=SCORES_KEPT_DAYS)
        if at and min(at) < cut:
            expired = self.stats.expired
            expired[table] = expired.get(table, 0) + sum(t < cut for t in at)

    def _request(self, table: str, columns: dict[str, list[Any]]) -> None:
        values = list(columns.values())
        started = time.perf_counter()
        self.client.insert(
            f"{self.db}.{table}", values, column_names=list(columns), column_oriented=True
        )
        took = time.perf_counter() - started
        self.stats.inserts += 1
        self.stats.rows += len(values[0])
        self.stats.last_insert_seconds = took
        self.stats.total_insert_seconds += took
        self.stats.insert_latency.observe(took)
        self.stats.by_table[table] = self.stats.by_table.get(table, 0) + len(values[0])

    def write(
        self, out: DetectorOutput, dead: Sequence[DeadLetter] = (), version: str = ""
    ) -> None:
        """Write scores, actions, links and dead letters of one batch."""
        self.write_scores(out, version)
        self.write_actions(out.actions)
        self.write_links(out)
        self.write_dead_letters(dead)

    def write_scores(self, out: DetectorOutput, version: str) -> None:
        for insert in self.score_inserts(out, version):
            insert()
        self.write_members(out)

    def score_inserts(self, out: DetectorOutput, version: str) -> list[Callable[[], None]]:
        """``entity_scores`` as inserts of at most `ROWS_PER_INSERT` rows, each building its
        rows only when called: a publisher retries only the inserts that failed."""
        return [partial(self._insert_scores, out, part, version) for part in _slices(out.scored)]

    def _insert_scores(
        self, out: DetectorOutput, part: list[tuple[int, slice]], version: str
    ) -> None:
        c = _columns(
            "entity_kind", "entity_id", "window_start", "window_end", "requests", "features",
            "novelty", "score", "level", "drift", "detector_version", "evidence",
        )  # fmt: skip
        for i, rows in part:
            sw = out.scored[i]
            names = sw.feature_names()
            n = len(sw.ids[rows])
            c["entity_kind"].extend([sw.kind] * n)
            c["entity_id"].extend(sw.ids[rows])
            c["window_start"].extend([_dt(sw.start_ms)] * n)
            c["window_end"].extend([_dt(sw.end_ms)] * n)
            c["requests"].extend(sw.requests[rows].tolist())
            c["features"].extend(
                {k: v for k, v in zip(names, row, strict=True) if v == v}
                for row in sw.values[rows].tolist()
            )
            c["novelty"].extend(sw.novelty[rows].tolist())
            c["score"].extend(sw.score[rows].tolist())
            c["level"].extend(sw.level[rows].astype(int).tolist())
            c["drift"].extend(sw.drift[rows].tolist())
            c["detector_version"].extend([version] * n)
            c["evidence"].extend(sw.evidence[rows].tolist())
        self._insert("entity_scores", c)

    def write_members(self, out: DetectorOutput) -> None:
        c = _columns("campaign_id", "window_end", "account_id", "joined")
        for cw in out.campaigns:
            end = _dt(cw.end_ms)
            for cid, members, joined in zip(cw.ids, cw.members, cw.joined, strict=True):
                fresh = set(joined)
                c["campaign_id"].extend([cid] * len(members))
                c["window_end"].extend([end] * len(members))
                c["account_id"].extend(members)
                c["joined"].extend(a in fresh for a in members)
        self._insert("campaign_members", c)

    def write_actions(self, actions: Sequence[EnforcementAction]) -> None:
        c = _columns(
            "enforcement_id", "ts", "entity_kind", "entity_id", "action", "score", "threshold",
            "reason_features", "reason_contributions", "reasons", "window_start", "window_end",
            "expires_at", "members", "detector_version",
        )  # fmt: skip
        for a in actions:
            c["enforcement_id"].append(a.enforcement_id)
            c["ts"].append(_dt(a.ts_ms))
            c["entity_kind"].append(a.entity_kind)
            c["entity_id"].append(a.entity_id)
            c["action"].append(a.action)
            c["score"].append(a.score)
            c["threshold"].append(a.threshold)
            c["reason_features"].append([r["feature"] for r in a.reasons])
            c["reason_contributions"].append([float(r["contribution"]) for r in a.reasons])
            c["reasons"].append(orjson.dumps(a.reasons).decode())
            c["window_start"].append(_dt(a.window_start_ms))
            c["window_end"].append(_dt(a.window_end_ms))
            c["expires_at"].append(None if a.expires_ms is None else _dt(a.expires_ms))
            c["members"].append(a.members or [])
            c["detector_version"].append(a.detector_version)
        self._insert("enforcement_actions", c)

    def write_links(self, out: DetectorOutput) -> None:
        for insert in self.link_inserts(out):
            insert()

    def link_inserts(self, out: DetectorOutput) -> list[Callable[[], None]]:
        """``entity_links`` as inserts of at most `ROWS_PER_INSERT` rows (see `score_inserts`)."""
        return [partial(self._insert_links, out, part) for part in _slices(out.links)]

    def _insert_links(self, out: DetectorOutput, part: list[tuple[int, slice]]) -> None:
        c = _columns("window_start", "account_id", "ip_block", "requests")
        for i, rows in part:
            link = out.links[i]
            accounts = link.accounts[rows]
            c["window_start"].extend([_dt(link.start_ms)] * len(accounts))
            c["account_id"].extend(accounts)
            c["ip_block"].extend(link.blocks[rows])
            c["requests"].extend(link.requests[rows].tolist())
        self._insert("entity_links", c)

    def write_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        c = _columns(
            "received_at", "source", "source_partition", "source_offset", "field", "reason", "raw"
        )
        for d in dead:
            c["received_at"].append(_dt(d.received_ms))
            c["source"].append(d.source)
            c["source_partition"].append(d.source_partition)
            c["source_offset"].append(d.source_offset)
            c["field"].append(d.rejection.field)
            c["reason"].append(str(d.rejection))
            c["raw"].append(d.raw.decode("utf-8", "replace"))
        self._insert("dead_letters", c)


def _slices(groups: Sequence[Sized]) -> list[list[tuple[int, slice]]]:
    """The rows of ``groups`` (windows of scores or links) cut into inserts of at most
    `ROWS_PER_INSERT` rows: per insert, (group, rows of it) pairs, in order.

    >>> _slices([range(3), range(0), range(5)])
    [[(0, slice(0, 3, None)), (2, slice(0, 5, None))]]
    """
    inserts: list[list[tuple[int, slice]]] = [[]]
    room = ROWS_PER_INSERT
    for i, group in enumerate(groups):
        lo = 0
        while lo < len(group):
            if room == 0:
                inserts.append([])
                room = ROWS_PER_INSERT
            n = min(len(group) - lo, room)
            inserts[-1].append((i, slice(lo, lo + n)))
            lo, room = lo + n, room - n
    return [part for part in inserts if part]


def _by_days(columns: dict[str, list[Any]], key: str | None) -> list[dict[str, list[Any]]]:
    """``columns`` cut so that no part holds rows of more than `DAYS_PER_INSERT` days of
    ``key`` (datetimes); as they are when they already do.

    >>> from datetime import datetime, timedelta
    >>> days = [datetime(2026, 1, 1) + timedelta(days=d) for d in (250, 0, 120, 0)]
    >>> [part["n"] for part in _by_days({"n": [0, 1, 2, 3], "at": days}, "at")]
    [[1, 3], [2], [0]]
    """
    if key is None or not columns[key]:
        return [columns]
    first = min(columns[key]).toordinal()
    if max(columns[key]).toordinal() - first < DAYS_PER_INSERT:
        return [columns]
    day = [at.toordinal() for at in columns[key]]
    parts: dict[int, list[int]] = {}
    for row, d in enumerate(day):
        parts.setdefault((d - first) // DAYS_PER_INSERT, []).append(row)
    return [
        {name: [col[row] for row in rows] for name, col in columns.items()}
        for _, rows in sorted(parts.items())
    ]


def _columns(*names: str) -> dict[str, list[Any]]:
    """Empty named columns for one insert (the insert names them, so any order works)."""
    return {name: [] for name in names}


# A zstd frame's first bytes. A pickle (protocol 2 and up) starts with 0x80, so a state written
# before checkpoints were compressed is told apart and read as it is.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CheckpointUnreadable(Exception):
    """A checkpoint was read but cannot be restored: damaged, or written by a version this one
    cannot read. Not an outage: retrying cannot mend it."""


def pack_state(state: bytes) -> bytes:
    """A checkpoint's state as `StateStore` stores it: zstd-compressed (level 1), once.

    A stage packs each partition's state as soon as it is pickled, so that a checkpoint holds
    one partition's pickle at a time rather than all of them (at 1M accounts, ~85 MB instead
    of ~0.7 GB). State already packed is returned as it is.

    >>> packed = pack_state(bytes([0x80]) + bytes(10_000))
    >>> len(packed) < 100, pack_state(packed) == packed
    (True, True)
    """
    if state[:4] == _ZSTD_MAGIC:
        return state
    return bytes(cramjam.zstd.compress(state, level=1))


class StateStore:
    """Worker checkpoints in ``detector_state``: the latest state and offset per stage/partition.

    A state is compressed (zstd, level 1) before the insert. The ClickHouse client and chDB each
    copy what is inserted, and a checkpoint holds every entity's state: at 1M accounts its
    pickles came to about 0.7 GB, and the insert briefly needed three to four times that.
    Pickled state shrinks 4x (a realistic detector) to 16x, at 0.5-1 GB/s.
    """

    def __init__(self, client: Client, database: str = "distillguard") -> None:
        self.client = client
        self.db = _database(database)

    def save(self, rows: Sequence[tuple[str, int, int, bytes]], version: str) -> None:
        """Rows of (stage, partition, next_offset, state), written in one insert."""
        if not rows:
            return
        now = datetime.now(UTC)
        self.client.insert(
            f"{self.db}.detector_state",
            [
                [stage, part, offset, now, version, pack_state(state)]
                for stage, part, offset, state in rows
            ],
            column_names=[
                "stage",
                "partition",
                "next_offset",
                "taken_at",
                "detector_version",
                "state",
            ],
        )

    def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        result = self.client.query(
            f"SELECT next_offset, state FROM {self.db}.detector_state "
            "WHERE stage = {stage:String} AND partition = {partition:Int32} "
            "ORDER BY taken_at DESC LIMIT 1",
            parameters={"stage": stage, "partition": partition},
            column_formats={"state": "bytes"},  # raw bytes, not text decoded as UTF-8
        )
        if not result.result_rows:
            return None
        offset, state = result.result_rows[0]
        if bytes(state[:4]) == _ZSTD_MAGIC:
            try:
                return int(offset), bytes(cramjam.zstd.decompress(state))
            except cramjam.DecompressionError as exc:
                raise CheckpointUnreadable(
                    f"the compressed state of {stage} partition {partition} is damaged ({exc})"
                ) from exc
        return int(offset), bytes(state)  # written before checkpoints were compressed


class Investigation:
    """The questions an analyst asks about one entity, as parameterized queries, each bounded
    in rows (``LIMIT``) and in time (ClickHouse's ``max_execution_time``)."""

    def __init__(
        self,
        client: Client,
        database: str = "distillguard",
        max_execution_time: float = QUERY_SECONDS,
    ) -> None:
        self.client = client
        self.db = _database(database)
        self.max_execution_time = max_execution_time

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        result = self.client.query(
            sql.replace("{db}", self.db),
            parameters=params,
            settings={"max_execution_time": self.max_execution_time},
        )
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def windows(self, kind: str, entity: str, limit: int = 30) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT window_start, window_end, requests, evidence, score, novelty, level, drift, "
            "features "
            "FROM {db}.entity_scores FINAL WHERE entity_kind = {kind:String} "
            "AND entity_id = {entity:String} ORDER BY window_start DESC LIMIT {limit:UInt32}",
            kind=kind,
            entity=entity,
            limit=limit,
        )

    def actions(self, kind: str, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT enforcement_id, ts, action, score, threshold, reasons, expires_at, members "
            "FROM {db}.enforcement_actions FINAL WHERE entity_kind = {kind:String} "
            "AND (entity_id = {entity:String} OR has(members, {entity:String})) "
            "ORDER BY ts DESC LIMIT {limit:UInt32}",
            kind=kind,
            entity=entity,
            limit=limit,
        )
        if kind == "account":
            rows += self._rows(
                "SELECT enforcement_id, ts, action, score, threshold, reasons, expires_at, "
                "members, entity_id AS via FROM {db}.enforcement_actions FINAL "
                "WHERE entity_kind != 'account' AND has(members, {entity:String}) "
                "ORDER BY ts DESC LIMIT {limit:UInt32}",
                entity=entity,
                limit=limit,
            )
        for r in rows:
            r["reasons"] = orjson.loads(r["reasons"])
        return rows

    def linked(self, kind: str, entity: str, limit: int = 50) -> list[dict[str, Any]]:
        """Blocks an account used, or accounts seen behind a block, with request counts."""
        this, other = (
            ("account_id", "ip_block") if kind == "account" else ("ip_block", "account_id")
        )
        return self._rows(
            f"SELECT {other} AS entity, sum(requests) AS requests, "
            "min(window_start) AS first_seen, max(window_start) AS last_seen "
            "FROM {db}.entity_links FINAL "
            f"WHERE {this} = {{entity:String}} GROUP BY {other} ORDER BY requests DESC "
            "LIMIT {limit:UInt32}",
            entity=entity,
            limit=limit,
        )

    def campaign_growth(self, campaign: str, limit: int = 60) -> list[dict[str, Any]]:
        """Per window of a campaign: its members then, and how many joined in that window."""
        rows = self._rows(
            "SELECT window_end, count() AS members, countIf(joined) AS joined "
            "FROM {db}.campaign_members FINAL WHERE campaign_id = {campaign:String} "
            "GROUP BY window_end ORDER BY window_end DESC LIMIT {limit:UInt32}",
            campaign=campaign,
            limit=limit,
        )
        return rows[::-1]

    def campaign_members(self, campaign: str, limit: int = 50) -> list[dict[str, Any]]:
        """Accounts of a campaign, first seen first, with the windows they were members in."""
        return self._rows(
            "SELECT account_id, min(window_end) AS first_window, max(window_end) AS last_window, "
            "count() AS windows FROM {db}.campaign_members FINAL "
            "WHERE campaign_id = {campaign:String} GROUP BY account_id "
            "ORDER BY first_window, account_id LIMIT {limit:UInt32}",
            campaign=campaign,
            limit=limit,
        )

    def top(
        self, kind: str, since_minutes: int = 60, limit: int = 20, flag_score: float = 0.999
    ) -> list[dict[str, Any]]:
        """Entities of the last ``since_minutes`` of event time, ranked by what does not saturate:
        windows at or over the flag threshold, then the strongest behaviour evidence, then novelty
        (a calibrated score ties at its ceiling for every clear case)."""
        return self._rows(
            "SELECT entity_id, countIf(score >= {flag:Float64}) AS windows_over, "
            "max(evidence) AS max_evidence, max(novelty) AS max_novelty, max(score) AS max_score, "
            "argMax(window_end, score) AS at, sum(requests) AS requests, max(level) AS max_level "
            "FROM {db}.entity_scores FINAL WHERE entity_kind = {kind:String} AND window_end >= "
            "(SELECT max(window_end) FROM {db}.entity_scores) - toIntervalMinute({since:UInt32}) "
            "GROUP BY entity_id ORDER BY windows_over DESC, max_evidence DESC, max_novelty DESC, "
            "requests DESC LIMIT {limit:UInt32}",
            kind=kind,
            since=since_minutes,
            limit=limit,
            flag=flag_score,
        )
