"""ClickHouse through clickhouse-connect on the real engine (chDB): DDL, sink, investigations."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import time
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

import streams.clickhouse
from models.outputs import DetectorOutput
from schemas.topics import Topics
from simulator.traffic import write_traffic
from streams.cli import main
from streams.clickhouse import (
    CheckpointUnreadable,
    ClickHouseSink,
    Investigation,
    MigrationEdited,
    StateStore,
    connect,
    migrate,
    pack_state,
)
from streams.processors import Produced
from streams.publish import OutputError, Outputs

pytestmark = pytest.mark.clickhouse
_n = itertools.count()


@pytest.fixture
def database() -> str:
    return f"dg_test_{next(_n)}"


def test_migrate_is_idempotent(chdb_url, database) -> None:
    client = connect(chdb_url)
    assert migrate(client, database) == [
        "0001_core_tables",
        "0002_detector_state",
        "0003_evidence_and_campaigns",
        "0004_fsync_before_acknowledging",
    ]
    assert migrate(client, database) == []
    tables = {r[0] for r in client.query(f"SHOW TABLES FROM {database}").result_rows}
    # every table of output and checkpoints acknowledges an insert once it is on disk, so the
    # offsets committed after it cannot run ahead of what a crash of the machine leaves
    engines = dict(
        client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String} "
            "AND name != 'schema_migrations'",
            parameters={"db": database},
        ).result_rows
    )
    assert len(engines) == 6
    for name, engine in engines.items():
        assert "fsync_after_insert = 1, fsync_part_directory = 1" in engine, name
    assert {
        "entity_scores",
        "enforcement_actions",
        "dead_letters",
        "entity_links",
        "schema_migrations",
    } <= tables


def test_an_edited_migration_is_caught_with_a_one_line_fix(chdb_url, database, capsys) -> None:
    client = connect(chdb_url)
    migrate(client, database)
    checksums = client.query(
        f"SELECT version, checksum FROM {database}.schema_migrations ORDER BY version"
    ).result_rows
    assert [v for v, _ in checksums] == [1, 2, 3, 4] and all(len(c) == 64 for _, c in checksums)
    # The store says version 2 was applied from other text than the file now holds.
    client.command(
        f"INSERT INTO {database}.schema_migrations (version, name, applied_at, checksum) "
        "VALUES (2, 'detector_state', now64(3) + 1, 'e' || repeat('0', 63))"
    )
    with pytest.raises(MigrationEdited, match=r"0002_detector_state\.sql was edited"):
        migrate(client, database)
    assert main(["migrate", "--clickhouse", chdb_url, "--database", database]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "new numbered migration" in err[0]


def test_migrate_refuses_a_malicious_database_name(chdb_url) -> None:
    with pytest.raises(ValueError, match="not a valid ClickHouse database name"):
        migrate(connect(chdb_url), "x; DROP DATABASE default")


def test_score_says_what_clickhouse_did_not_keep_of_an_old_history(
    chdb_url, tmp_path, monkeypatch, capsys
) -> None:
    """A replayed history older than the 90 days the score tables keep: their TTL drops its
    windows as they are written. `score` counts them and says so in one line, with where the
    scores are, instead of losing them silently."""
    monkeypatch.setenv("DISTILLGUARD_CLICKHOUSE_DATABASE", "dg_old_history")
    day, now = 86_400_000, int(time.time() * 1000) // 60_000 * 60_000

    def event(i: int, ts: int, account: str) -> bytes:
        e = {"event_id": f"e{i}", "ts": ts, "account_id": account, "ip": "192.0.2.1",
             "model": "m", "input_tokens": 10, "output_tokens": 20}  # fmt: skip
        return orjson.dumps(e)

    lines = [event(i, now - 120 * day + i * 20_000, "old") for i in range(9)]
    lines += [event(100 + i, now - day + i * 20_000, "new") for i in range(9)]
    src, out, scores = tmp_path / "e.jsonl", tmp_path / "a.jsonl", tmp_path / "s.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    args = ["score", "--input", str(src), "--output", str(out), "--scores", str(scores)]
    assert main([*args, "--clickhouse", chdb_url]) == 0
    windows = [orjson.loads(x) for x in scores.read_bytes().splitlines()]
    cut = datetime.fromtimestamp((now - 90 * day) / 1000, UTC).isoformat()[:19]
    old = sum(w["window_start"] < cut for w in windows)
    assert old == 6 and len(windows) == 12  # 3 minutes of an account and its block, each
    (note,) = [x for x in capsys.readouterr().err.splitlines() if "did not keep" in x]
    # and the account-to-block link of each old minute
    said = f"did not keep {old + 3} rows of windows older than 90 days (entity_links 3, "
    assert f"{said}entity_scores {old}): the TTL of its score tables drops them" in note
    assert note.endswith(f"scores are in {scores}, their actions in ClickHouse and the output")
    client = connect(chdb_url)
    for table, rows in (("entity_scores", len(windows) - old), ("entity_links", 3)):
        (n,) = client.query(f"SELECT count() FROM dg_old_history.{table} FINAL").result_rows[0]
        assert n == rows, table
    # all recent: nothing to say
    src.write_bytes(b"\n".join(lines[9:]) + b"\n")
    assert main([*args, "--clickhouse", chdb_url]) == 0
    assert "did not keep" not in capsys.readouterr().err


def test_old_windows_are_counted_once_when_their_insert_is_retried(
    chdb_url, database, small_run
) -> None:
    """A publisher retries an insert that failed: the rows ClickHouse's TTL drops are counted
    when the insert succeeds, not once per attempt. The failure is real: the database does not
    exist until it is migrated."""
    client = connect(chdb_url)
    sink = ClickHouseSink(client, database)
    first, ago = small_run.scored[0], 120 * 86_400_000
    old = replace(first, start_ms=first.start_ms - ago, end_ms=first.end_ms - ago)
    (insert,) = sink.score_inserts(DetectorOutput(scored=[old]), "v-test")
    with pytest.raises(Exception, match=database):
        insert()
    assert sink.stats.expired == {}
    migrate(client, database)
    insert()  # the retry
    assert sink.stats.expired == {"entity_scores": len(first)}


def test_score_writes_scores_actions_links_and_dead_letters(
    chdb_url, tmp_path, small_traffic, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DISTILLGUARD_CLICKHOUSE_DATABASE", "dg_score")
    events, actions = tmp_path / "e.jsonl", tmp_path / "a.jsonl"
    write_traffic(small_traffic, events, None, bad_line_rate=0.002)
    for _ in range(2):  # a second replay must not double anything
        assert (
            main(
                [
                    "score",
                    "--input",
                    str(events),
                    "--output",
                    str(actions),
                    "--clickhouse",
                    chdb_url,
                ]
            )
            == 0
        )
    summary = capsys.readouterr().err.splitlines()[-2]
    windows = int(summary.split(" entity windows scored")[0].rsplit(" ", 1)[1])
    rejected = int(summary.split(" rejected")[0].rsplit(" ", 1)[1])
    client = connect(chdb_url)

    def count(sql: str) -> int:
        return int(client.query(sql).result_rows[0][0])

    assert count("SELECT count() FROM dg_score.entity_scores FINAL") == windows
    lines = actions.read_bytes().splitlines()
    assert count("SELECT count() FROM dg_score.enforcement_actions FINAL") == len(lines)
    assert count("SELECT count() FROM dg_score.dead_letters FINAL") == rejected > 0
    assert count("SELECT count() FROM dg_score.entity_links FINAL") > 0
    first = orjson.loads(lines[0])
    row = client.query(
        "SELECT entity_id, action, reasons, reason_features FROM dg_score.enforcement_actions "
        "FINAL WHERE enforcement_id = {id:String}",
        parameters={"id": first["enforcement_id"]},
    ).result_rows[0]
    assert row[0] == first["entity_id"] and row[1] == first["action"]
    assert orjson.loads(row[2]) == first["reasons"]
    assert list(row[3]) == [r["feature"] for r in first["reasons"]]

    inv = Investigation(client, "dg_score")
    blatant = small_traffic.labels["campaigns"]["blatant-6"]["accounts"][0]
    acts = inv.actions("account", blatant)
    assert acts and all(a["reasons"] for a in acts)
    assert inv.windows("account", blatant, limit=5)
    assert inv.linked("account", blatant)[0]["requests"] > 0
    top = inv.top("account", since_minutes=30, limit=10)
    assert len(top) == 10 and top[0]["max_score"] >= 0.999
    # ranked by what does not saturate: windows over the flag threshold, then evidence
    assert top[0]["windows_over"] >= top[-1]["windows_over"] and top[0]["windows_over"] > 1
    # values never enter SQL text
    assert inv.windows("account", "x' OR 1=1 --") == []

    assert main(["investigate", "account", blatant, "--clickhouse", chdb_url]) == 0
    out = capsys.readouterr().out
    assert "actions, newest first (" in out and "contribution" in out and "linked IP blocks" in out
    assert "level: 0 none, 1 flagged" in out  # the columns are explained where they are shown
    assert main(["investigate", "account", "nobody", "--clickhouse", chdb_url]) == 1
    assert "no account 'nobody'" in capsys.readouterr().out
    # the store's SQL without a ClickHouse client, read-only
    assert (
        main(
            [
                "sql",
                "SELECT count() AS n FROM dg_score.campaign_members",
                "--json",
                "--clickhouse",
                chdb_url,
            ]
        )
        == 0
    )
    assert orjson.loads(capsys.readouterr().out)[0]["n"] > 0
    assert main(["sql", "DROP TABLE dg_score.entity_scores", "--clickhouse", chdb_url]) == 2
    assert "readonly" in capsys.readouterr().err.lower()
    assert main(["investigate", "top", "--json", "--clickhouse", chdb_url]) == 0
    assert orjson.loads(capsys.readouterr().out)[0]["max_score"] >= 0.999

    # campaigns: membership over time, and one screen saying why it is a campaign
    campaign, members = client.query(
        "SELECT campaign_id, uniqExact(account_id) AS n FROM dg_score.campaign_members FINAL "
        "GROUP BY campaign_id ORDER BY n DESC LIMIT 1"
    ).result_rows[0]
    growth = inv.campaign_growth(campaign)
    # every member joined at least once (an account can leave and rejoin); the first window is
    # all joiners
    assert growth and sum(g["joined"] for g in growth) >= members
    assert growth[0]["joined"] == growth[0]["members"]
    assert len(inv.campaign_members(campaign, limit=1000)) == members
    assert main(["investigate", "campaign", campaign, "--clickhouse", chdb_url]) == 0
    out = capsys.readouterr().out
    assert f"campaign {campaign}" in out and "members over time" in out
    assert main(["investigate", "campaign", "no-such", "--clickhouse", chdb_url]) == 1
    assert "no campaign 'no-such'" in capsys.readouterr().out


def test_large_windows_are_written_a_slice_at_a_time_and_whole(
    chdb_url, database, small_run, monkeypatch
) -> None:
    """Scores and links go in inserts of at most ROWS_PER_INSERT rows (so a million-account
    window never needs its rows as Python values at once), and every row arrives once."""
    monkeypatch.setattr(streams.clickhouse, "ROWS_PER_INSERT", 100)
    client = connect(chdb_url)
    migrate(client, database)
    sink = ClickHouseSink(client, database)
    sizes: list[tuple[str, int]] = []
    insert = sink._insert

    def recorded(table: str, columns: dict) -> None:
        sizes.append((table, len(next(iter(columns.values())))))
        insert(table, columns)

    monkeypatch.setattr(sink, "_insert", recorded)
    sink.write_scores(small_run, "v-test")
    sink.write_links(small_run)
    scored = [(sw.kind, e, sw.start_ms) for sw in small_run.scored for e in sw.ids]
    links = sum(len(link) for link in small_run.links)
    assert max(len(sw) for sw in small_run.scored) > 100 and links > 100
    rows = client.query(
        f"SELECT entity_kind, entity_id, toUnixTimestamp64Milli(window_start) "
        f"FROM {database}.entity_scores"
    ).result_rows
    assert sorted(rows) == sorted(scored)
    assert client.query(f"SELECT count() FROM {database}.entity_links").result_rows[0][0] == links
    big = [n for table, n in sizes if table in ("entity_scores", "entity_links")]
    assert max(big) == 100 and sum(big) == len(scored) + links and len(big) > 100


def test_windows_of_many_days_go_in_one_insert(chdb_url, database, small_run, monkeypatch) -> None:
    """A replayed history, or a gateway whose clock jumps, can bring windows of more days into
    one batch than ClickHouse lets an insert touch partitions (100 by default; `entity_scores`,
    `entity_links` and `campaign_members` are partitioned by day, the other tables by month):
    the batch is written, not retried for ever."""
    monkeypatch.setattr(streams.clickhouse, "ROWS_PER_INSERT", 1_000_000)
    client = connect(chdb_url)
    migrate(client, database)
    sink = ClickHouseSink(client, database)
    day, first = 86_400_000, small_run.scored[0]
    days = [replace(first, start_ms=first.start_ms + d * day, end_ms=first.end_ms + d * day)
            for d in range(150)]  # fmt: skip
    sink.write_scores(DetectorOutput(scored=days), "v-test")
    ((rows, distinct_days),) = client.query(
        f"SELECT count(), uniqExact(toDate(window_start)) FROM {database}.entity_scores"
    ).result_rows
    assert (rows, distinct_days) == (150 * len(first), 150)


def test_a_retry_after_a_failed_insert_writes_only_the_inserts_not_written(
    chdb_url, database, small_run, monkeypatch
) -> None:
    """A batch's scores go out as several inserts; when one fails, the retry writes it and the
    ones after it, never again the ones before."""
    monkeypatch.setattr(streams.clickhouse, "ROWS_PER_INSERT", 100)
    client = connect(chdb_url)
    migrate(client, database)
    sink = ClickHouseSink(client, database)
    out = DetectorOutput(scored=small_run.scored, links=small_run.links)
    calls = itertools.count()
    insert = client.insert

    def third_fails(*args, **kwargs):
        if next(calls) == 2:
            raise ConnectionError("ClickHouse went away")
        return insert(*args, **kwargs)

    monkeypatch.setattr(client, "insert", third_fails)

    async def blocking(call) -> None:
        call()

    publication = Outputs(Produced(out=out), Topics(), None, sink, "v-test", blocking)
    with pytest.raises(OutputError):
        asyncio.run(publication.attempt())
    asyncio.run(publication.attempt())
    total = sum(len(sw) for sw in out.scored)
    links = sum(len(link) for link in out.links)
    # Rows sent, not rows read back: the table's merges would hide rows written twice.
    assert sink.stats.by_table == {"entity_scores": total, "entity_links": links}
    for table, rows in (("entity_scores", total), ("entity_links", links)):
        query = f"SELECT count() FROM {database}.{table} FINAL"
        assert client.query(query).result_rows[0][0] == rows


def test_checkpoints_are_stored_compressed_and_older_ones_still_load(chdb_url, database) -> None:
    client = connect(chdb_url)
    migrate(client, database)
    store = StateStore(client, database)
    state = pickle.dumps({"baseline": np.full((10_000, 8), np.nan, dtype=np.float32)}, protocol=5)
    store.save([("accounts", 3, 1234, state)], "v1")
    assert store.load("accounts", 3) == (1234, state)
    ((stored,),) = client.query(
        f"SELECT length(state) FROM {database}.detector_state WHERE partition = 3"
    ).result_rows
    assert stored < len(state) / 10  # what the insert and chDB copy is the compressed frame

    # a checkpoint saved before compression: the raw pickle, read as it is
    older = pickle.dumps({"windows": [1, 2, 3]}, protocol=5)
    client.insert(
        f"{database}.detector_state",
        [["accounts", 4, 99, datetime.now(UTC), "v0", older]],
        column_names=["stage", "partition", "next_offset", "taken_at", "detector_version", "state"],
    )
    assert store.load("accounts", 4) == (99, older)

    # a compressed checkpoint cut short: read, but it cannot be decoded
    client.insert(
        f"{database}.detector_state",
        [["accounts", 5, 7, datetime.now(UTC), "v1", pack_state(state)[:40]]],
        column_names=["stage", "partition", "next_offset", "taken_at", "detector_version", "state"],
    )
    with pytest.raises(CheckpointUnreadable, match="accounts partition 5 is damaged"):
        store.load("accounts", 5)
