"""The streaming pipeline on a real broker (Tansu) and the real ClickHouse engine (chDB).

Every test starts its own broker, so topics start empty, and uses its own database.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from infra.broker import read_topic
from models.detector import Detector, DetectorConfig, Population, score_in_order
from schemas.topics import DEAD_LETTERS, ENFORCEMENT, USAGE_EVENTS
from schemas.validation import Rejection, parse_enforcement, parse_event
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.clickhouse import ClickHouseSink, StateStore
from streams.engine import Engine, EngineConfig
from streams.produce import produce
from tests.streams.conftest import PARTITIONS, query, wait_until
from tests.streams.conftest import valid as valid_events

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
# Warm up on a few thousand windows so a 20-minute scenario reaches enforcement.
DETECTOR = DetectorConfig(calibration_warmup=2_000, forest_window=500)


@pytest.fixture(scope="module")
def traffic():
    return simulate(replace(SCENARIOS["small"], minutes=20, benign_accounts=800))


@pytest.fixture(scope="module")
def messages(traffic) -> list[tuple[bytes, bytes]]:
    return list(traffic_lines(traffic, bad_line_rate=0.002))


def engine(broker, db, lock, **kw) -> Engine:
    client, name = db
    cfg = EngineConfig(
        broker.bootstrap,
        detector=DETECTOR,
        checkpoint_seconds=kw.pop("checkpoint_seconds", 2.0),
        internal_partitions=PARTITIONS,
        **kw,
    )
    return Engine(cfg, ClickHouseSink(client, name), StateStore(client, name), lock)


def account_scores(messages: list[tuple[bytes, bytes]]) -> dict[tuple[str, int], float]:
    """The account scores a worker owning every partition must give: each partition's events in
    log order, windows scored by end then partition, against one shared population."""
    pop = Population(DETECTOR)
    parts = {
        p: Detector(DETECTOR, kinds=("account", "campaign"), population=pop, link_campaigns=False)
        for p in range(PARTITIONS)
    }
    for key, value in messages:
        event = parse_event(value)
        if key and not isinstance(event, Rejection):
            parts[(murmur2(key) & 0x7FFFFFFF) % PARTITIONS].add(event)
    for det in parts.values():
        det.close_open()
    return {
        (sw.ids[i], sw.start_ms): float(sw.score[i])
        for _, out in score_in_order(parts, None)
        for sw in out.scored
        if sw.kind == "account"
        for i in range(len(sw.ids))
    }


def worker_account_scores(db) -> dict[tuple[str, int], float]:
    rows = query(
        db,
        "SELECT entity_id, toUnixTimestamp64Milli(window_start), score "
        "FROM DB.entity_scores FINAL WHERE entity_kind = 'account'",
    )
    return {(e, int(start)): float(score) for e, start, score in rows}


def assert_same_scores(got: dict[tuple[str, int], float], want: dict[tuple[str, int], float]):
    assert got.keys() == want.keys()
    differ = [(k, got[k], want[k]) for k in got if abs(got[k] - want[k]) > 1e-6]
    assert not differ, f"{len(differ)} of {len(got)} windows differ, e.g. {differ[:3]}"


async def finish(engines: list[Engine], read_at_least: int, replacing: bool = False) -> None:
    """The input has ended: once it is all read, ask for the end-of-stream flush and wait.

    ``replacing``: these engines took over from a crashed one, whose forwarded events they read
    too, so completion is "nothing left to read and no window open", seen twice in a row.
    """

    def all_read() -> bool:
        read = sum(e.metrics.events_in for e in engines)
        caught_up = all(e.metrics.lag.get("accounts", 1) == 0 for e in engines)
        return read >= read_at_least and caught_up

    await wait_until(all_read, engines=engines)
    for e in engines:
        e.request_flush()
    if not replacing:
        await wait_until(lambda: Engine.drained(*engines), engines=engines)
        return

    def settled() -> bool:
        # accounts, blocks, campaigns
        return len(engines[0].metrics.lag) == 3 and Engine.settled(*engines)

    await wait_until(settled, engines=engines)
    await asyncio.sleep(3)  # another fetch round: nothing new may arrive
    await wait_until(settled, engines=engines)


async def read_with_group(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="billing",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return got


def test_events_become_rows_actions_and_dead_letters(broker, db, messages) -> None:
    async def run() -> None:
        eng = engine(broker, db, asyncio.Lock())
        await eng.start()
        await asyncio.to_thread(produce, messages, broker.bootstrap, USAGE_EVENTS)
        await finish([eng], len(messages))
        assert eng.metrics.events_in == len(messages)
        # the memory freed by scoring windows went back to the system (streams.memory)
        await wait_until(lambda: eng.metrics.memory_trims >= 1, timeout=15, engines=[eng])
        await eng.stop()

        valid = valid_events(messages)
        bad = len(messages) - valid
        # every valid event counted once in its account's window, and in its block's window
        ((acct_req, acct_rows, acct_rows_final),) = query(
            db,
            "SELECT sum(requests), count(), uniqExact(entity_id, window_start) "
            "FROM DB.entity_scores WHERE entity_kind = 'account'",
        )
        assert acct_req == valid and acct_rows == acct_rows_final
        # however its partitions' fetches interleaved, the worker scored every window as the
        # fixed order does
        assert_same_scores(worker_account_scores(db), account_scores(messages))
        ((block_req,),) = query(
            db, "SELECT sum(requests) FROM DB.entity_scores FINAL WHERE entity_kind = 'ip_block'"
        )
        assert block_req == valid

        actions = query(
            db, "SELECT enforcement_id, entity_kind, action FROM DB.enforcement_actions FINAL"
        )
        assert {a[2] for a in actions} >= {"flag", "throttle"}
        # accounts and blocks by their stages, campaigns by the campaign stage, which links
        # accounts across every partition
        assert {a[1] for a in actions} == {"account", "ip_block", "campaign"}
        ((members, campaigns),) = query(
            db, "SELECT count(), uniqExact(campaign_id) FROM DB.campaign_members FINAL"
        )
        assert campaigns >= 1 and members >= 5 * campaigns

        # a billing system with a consumer group, and one with assigned partitions
        from_group = await read_with_group(broker.bootstrap, ENFORCEMENT, len(actions))
        assigned = read_topic(broker.bootstrap, ENFORCEMENT, PARTITIONS)
        ids = {a[0] for a in actions}
        assert {orjson.loads(v)["enforcement_id"] for v in from_group} == ids
        assert {orjson.loads(v)["enforcement_id"] for _, v in assigned} == ids
        for key, value in assigned:
            doc = parse_enforcement(value)
            assert not isinstance(doc, Rejection), doc
            assert key.decode() == f"{doc['entity_kind']}:{doc['entity_id']}"

        # bad messages: on the DLQ topic with reason and source offset, and in the table
        dlq = [orjson.loads(v) for _, v in read_topic(broker.bootstrap, DEAD_LETTERS, 1)]
        assert len(dlq) == bad > 0
        assert all(
            d["reason"] and d["source"] == USAGE_EVENTS and d["source_offset"] >= 0 for d in dlq
        )
        ((rows,),) = query(db, "SELECT count() FROM DB.dead_letters FINAL")
        assert rows == bad

    asyncio.run(run())


def test_two_workers_split_partitions_and_score_every_window_once(
    broker, db, messages, caplog
) -> None:
    async def run() -> None:
        lock = asyncio.Lock()
        a = engine(broker, db, lock, client_id="worker-a")
        b = engine(broker, db, lock, client_id="worker-b")
        await a.start()
        half = len(messages) // 2
        await asyncio.to_thread(produce, messages[:half], broker.bootstrap, USAGE_EVENTS)
        await wait_until(lambda: a.metrics.events_in > half // 4, engines=[a])
        await b.start()  # joins both groups: partitions move from a to b mid-stream
        await asyncio.to_thread(produce, messages[half:], broker.bootstrap, USAGE_EVENTS)
        await finish([a, b], len(messages))
        await asyncio.gather(a.stop(), b.stop())
        assert a.metrics.events_in > 0 and b.metrics.events_in > 0

        valid = valid_events(messages)
        # A handoff that outlasts a third of the rebalance timeout (a loaded machine) is not
        # checkpointed: the next owner replays from the last checkpoint, at least once with the
        # same ids. Otherwise every window and decision is written exactly once.
        replayed = any("not checkpointed" in r.getMessage() for r in caplog.records)
        final = "FINAL" if replayed else ""
        for kind in ("account", "ip_block"):
            ((req, rows, keys),) = query(
                db,
                "SELECT sum(requests), count(), uniqExact(entity_id, window_start) "
                f"FROM DB.entity_scores {final} WHERE entity_kind = '{kind}'",
            )
            assert req == valid, kind  # nothing lost, nothing counted twice
            assert rows == keys, kind  # every window scored exactly once
        # Every decision written once, under one id; an account's own stage and the campaign
        # stage (acting on its members) may reach the same decision in the same window: one id,
        # one row from each (README: consumers drop redeliveries by id).
        twice = query(
            db,
            "SELECT entity_kind, entity_id, action, window_end, uniqExact(enforcement_id) AS ids, "
            "count() AS n, countIf(reasons LIKE '%campaign_member%') AS as_member "
            f"FROM DB.enforcement_actions {final} GROUP BY ALL HAVING count() > 1",
        )
        assert all(r[4] == 1 and r[5] == 2 and r[6] == 1 for r in twice), twice

        # Where "same input, same decisions" stops (README): each worker's population models
        # learn only the partitions it owns, so once partitions move to the second worker their
        # windows are scored against another population than one worker's. Measured here; if
        # this ever reaches 0, the README's limit is gone.
        got, want = worker_account_scores(db), account_scores(messages)
        assert got.keys() == want.keys()
        differ = sum(abs(got[k] - want[k]) > 1e-6 for k in got)
        print(
            f"\ntwo workers: {differ} of {len(got)} account windows ({differ / len(got):.0%}) "
            "scored otherwise than by one worker"
        )
        assert differ > 0

    asyncio.run(run())


def test_a_crashed_worker_is_replaced_without_loss_or_double_enforcement(
    broker, db, messages, traffic
) -> None:
    async def run() -> None:
        lock = asyncio.Lock()
        await asyncio.to_thread(produce, messages, broker.bootstrap, USAGE_EVENTS)
        first = engine(broker, db, lock, client_id="first", max_records=500)
        await first.start()
        await wait_until(
            lambda: first.metrics.events_in > len(messages) // 2 and first.metrics.checkpoints >= 2,
            engines=[first],
        )
        await first.stop(graceful=False)  # a crash: nothing since the last checkpoint is saved
        second = engine(broker, db, lock, client_id="second")
        await second.start()
        await finish([second], 1, replacing=True)
        await second.stop()
        valid = valid_events(messages)
        # The crash left work past the last checkpoint in at least one stage, read again by the
        # replacement (which stage depends on where the crash fell: a stage paused for alignment
        # may have checkpointed all it had read).
        read = sum(e.metrics.events_in + e.metrics.block_events_in for e in (first, second))
        assert read > len(messages) + valid  # replayed

        ((req,),) = query(
            db, "SELECT sum(requests) FROM DB.entity_scores FINAL WHERE entity_kind = 'account'"
        )
        assert req == valid  # nothing lost, and replayed windows collapsed onto the first
        # and the replay rebuilt the same state: every window scored as without the crash
        assert_same_scores(worker_account_scores(db), account_scores(messages))
        decisions = query(
            db,
            "SELECT entity_kind, entity_id, action, window_end, "
            "uniqExact(enforcement_id) FROM DB.enforcement_actions "
            "GROUP BY entity_kind, entity_id, action, window_end",
        )
        assert decisions and all(d[4] == 1 for d in decisions)  # a redelivery has the same id
        # Read as a backlog, partitions are kept in step in event time, so the shared models do
        # not learn one partition's campaign before scoring the others' (watermark alignment).
        campaign_accounts = {a for c in traffic.labels["campaigns"].values() for a in c["accounts"]}
        # With campaigns linked across partitions by the campaign stage: 86% measured (40% with
        # per-account scoring alone), through a crash and a replay.
        acted = {d[1] for d in decisions if d[0] == "account"}
        assert len(acted & campaign_accounts) >= 0.75 * len(campaign_accounts)
        on_topic = Counter(
            (d["entity_kind"], d["entity_id"], d["action"], d["window_end"], d["enforcement_id"])
            for d in (
                orjson.loads(v) for _, v in read_topic(broker.bootstrap, ENFORCEMENT, PARTITIONS)
            )
        )
        per_decision = Counter(k[:4] for k in on_topic)
        assert all(n == 1 for n in per_decision.values())  # one id per decision on the topic

    asyncio.run(run())
