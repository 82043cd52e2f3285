"""The stages' processors without a broker: records in, what they produced out."""

from __future__ import annotations

import random
import re
import zlib
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

import schemas.ddl
from models.campaign_scoring import decode, encode
from models.detector import Detector, DetectorConfig, DetectorOutput, Population, score_in_order
from models.keys import kafka_partitions
from schemas.ddl import SCORES_KEPT_DAYS
from schemas.validation import parse_event, validate_event
from simulator.traffic import SimulatedTraffic
from streams import wire
from streams.metrics import Metrics
from streams.processors import (
    LATE,
    MAX_PAST_SKEW_MS,
    TOMBSTONE,
    CampaignLinking,
    Limits,
    Produced,
    read_forwards,
    read_usage,
)

NOW = 1_795_392_000_000  # 2026-11-23T00:00:00Z, the time the worker "received" the records


def event(i: int, ts_ms: int, account: str = "a", ip: str = "10.0.0.1", **extra) -> bytes:
    doc = {
        "event_id": f"e{i}",
        "ts": ts_ms,
        "account_id": account,
        "ip": ip,
        "model": "m",
        "input_tokens": 5,
        "output_tokens": 9,
        **extra,
    }
    return orjson.dumps(doc)


def records(values: list[bytes | None]) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=i, value=v) for i, v in enumerate(values)]


def read(values, det=None, limits: Limits | None = None):
    det = det or Detector(DetectorConfig(allowed_lateness_ms=0), kinds=("account",))
    produced, metrics = Produced(), Metrics()
    read_usage(
        records(values),
        3,
        det,
        produced,
        topic="usage",
        limits=limits or Limits(),
        received_ms=NOW,
        metrics=metrics,
    )
    return det, produced, metrics


def test_every_message_is_scored_a_duplicate_or_dead_lettered_with_its_reason() -> None:
    values = [
        event(1, NOW - 120_000),
        event(1, NOW - 120_000),  # redelivered
        None,  # a tombstone
        b"x" * 2_000,  # over the size limit
        b'{"event_id": "e9"}',  # invalid
        event(2, NOW + 3_600_000),  # an hour ahead of the worker's clock
        event(3, NOW - 30_000),  # moves the watermark past the first window
        event(4, NOW - 119_000),  # its window has closed
    ]
    det, produced, metrics = read(values, limits=Limits(max_message_bytes=1_000))
    why = {d.source_offset: d.rejection for d in produced.dead}
    assert why[2] == TOMBSTONE
    assert "exceeds max_message_bytes 1000" in why[3].problem
    assert (why[4].field, why[4].problem) == ("ts", "missing required field")
    assert "ahead of" in why[5].problem and why[5].field == "ts"
    assert why[7] == LATE
    assert sorted(why) == [2, 3, 4, 5, 7]
    assert all(d.source_partition == 3 and d.source == "usage" for d in produced.dead)
    assert (metrics.events_in, metrics.duplicates, metrics.late) == (8, 1, 1)
    # the accepted events, forwarded by IP block with this partition's progress
    (fw,) = produced.forwards
    assert (fw.source, fw.offsets.tolist()) == (3, [0, 6])
    assert [c.names("blocks")[b] for c in fw.chunks for b in c.block] == ["10.0.0.0/24"] * 2
    assert fw.progress.tolist()[1] == NOW - 60_000  # the first window had closed by then
    # nothing is scored here: the stage scores all its partitions' windows in one order
    assert not produced.out.scored and det.pending_end_ms == NOW - 60_000


def test_a_block_partition_closes_its_windows_at_the_slowest_account_partition() -> None:
    det = Detector(kinds=("ip_block",), external_watermark=True)
    upstream: dict[int, int] = {}
    metrics = Metrics()
    e = list(parse_event(event(1, NOW + 1_000)))  # in the window [NOW, NOW + 1 min)
    batch = [orjson.dumps([0, NOW, None, [e]]), orjson.dumps([1, NOW + 120_000, None])]
    read_forwards(records(batch), det, upstream, {0, 1}, metrics, {})
    assert upstream == {0: NOW, 1: NOW + 120_000} and det.pending_end_ms is None  # 0 holds it
    read_forwards(
        records([orjson.dumps([0, NOW + 60_000, None])]), det, upstream, {0, 1}, metrics, {}
    )
    assert det.pending_end_ms == NOW + 60_000 and metrics.block_events_in == 1
    # an event for a window that has closed is dropped by the window, and counted
    stale = list(parse_event(event(2, NOW + 2_000)))
    read_forwards(
        records([orjson.dumps([0, NOW + 60_000, None, [stale]])]),
        det,
        upstream,
        {0, 1},
        metrics,
        {},
    )
    assert metrics.block_late == 1 and metrics.block_events_in == 2
    # a source it has not heard from yet holds every window
    later = orjson.dumps([0, NOW + 180_000, None])
    read_forwards(records([later]), det, upstream, {0, 1, 2}, metrics, {})
    assert det.closed_before_ms == NOW + 60_000


def _summaries(traffic: SimulatedTraffic, partitions: int) -> list[tuple[int, int, bytes]]:
    """(window end, partition, encoded summaries) of every account window, as the accounts
    stage sends them."""
    cfg = DetectorConfig(calibration_warmup=200)
    pop = Population(cfg)
    parts = {
        p: Detector(cfg, kinds=("account", "campaign"), population=pop, link_campaigns=False)
        for p in range(partitions)
    }
    for raw in traffic.events:
        e = validate_event(raw)
        parts[zlib.crc32(e.account_id.encode()) % partitions].add(e)
    for det in parts.values():
        det.close_open()
    return [
        (x.summaries.end_ms, p, encode(x, source=p))
        for p, out in score_in_order(parts, None)
        for x in out.summaries
    ]


def _link(messages: list[bytes], sources: set[int]) -> list[tuple[str, str, int]]:
    linking = CampaignLinking(DetectorConfig(calibration_warmup=200))
    out = DetectorOutput()
    for i in range(0, len(messages), 7):
        batch = records(messages[i : i + 7])
        linking.handle(batch, sources, "v", Metrics(), out)
    assert not linking.pending
    return sorted((a.entity_id, a.action, a.window_end_ms) for a in out.actions)


@pytest.fixture(scope="module")
def summaries(small_traffic: SimulatedTraffic) -> list[tuple[int, int, bytes]]:
    return _summaries(small_traffic, 3)


def test_campaigns_do_not_depend_on_arrival_order_or_on_replayed_summaries(summaries) -> None:
    ends = sorted({end for end, _, _ in summaries})
    progress = [orjson.dumps([p, end, None]) for end in ends for p in range(3)]

    def in_order(shuffle: random.Random | None, replay: bool) -> list[bytes]:
        """Per window end: its summaries (in some order, some sent twice), then progress."""
        msgs: list[bytes] = []
        for i, end in enumerate(ends):
            these = [m for e, _, m in summaries if e == end]
            if shuffle is not None:
                shuffle.shuffle(these)
            if replay:  # a partition restarted: this window's summaries again, and the last's
                these += [m for e, p, m in summaries if e == end and p == 0]
                these = [m for e, p, m in summaries if i and e == ends[i - 1] and p == 1] + these
            msgs += these + progress[3 * i : 3 * i + 3]
        return msgs

    reference = _link(in_order(None, False), {0, 1, 2})
    assert any(action for _, action, _ in reference)  # the small world's campaigns are linked
    assert _link(in_order(random.Random(1), False), {0, 1, 2}) == reference
    assert _link(in_order(random.Random(2), True), {0, 1, 2}) == reference


def test_summaries_too_big_for_one_message_link_the_same_in_parts(summaries) -> None:
    """A partition's summaries of a busy window go out in parts (`wire.summaries`; 125,000
    accounts of one window came to 24.7 MB, past what the producer accepts, and the accounts
    stage retried until it gave up). In parts, replayed parts included, the campaigns and their
    actions are the same as from whole messages."""
    ends = sorted({end for end, _, _ in summaries})
    progress = [orjson.dumps([p, end, None]) for end in ends for p in range(3)]

    def messages(copies: list[int | None]) -> list[bytes]:
        """Per window end: each partition's summaries once per copy (whole when None, else in
        parts of at most that many bytes), then the progress that lets it be linked."""
        msgs: list[bytes] = []
        for i, end in enumerate(ends):
            for _, p, m in (x for x in summaries if x[0] == end):
                for max_bytes in copies:
                    msgs += [m] if max_bytes is None else wire.summaries(decode(m), p, max_bytes)
            msgs += progress[3 * i : 3 * i + 3]
        return msgs

    reference = _link(messages([None]), {0, 1, 2})
    split = messages([4_000])
    assert len(split) > 2 * len(messages([None]))  # most windows did go out in parts
    assert max(len(m) for m in split) <= 4_000
    assert _link(split, {0, 1, 2}) == reference
    # Replayed (a partition restarted): in the same parts, or cut in a different number of
    # parts, the replay replaces every part of the first copy.
    assert _link(messages([4_000, 4_000]), {0, 1, 2}) == reference
    assert _link(messages([2_500, 4_000]), {0, 1, 2}) == reference


def test_an_event_ahead_of_when_it_was_produced_is_refused_in_a_backlog_read_later() -> None:
    # A backlog produced two hours ago, read now: one gateway's clock ran an hour fast. Its event
    # is no longer ahead of the worker's clock, but it is an hour ahead of its record's
    # timestamp. Accepted, it would move the watermark an hour on and make the rest of the
    # backlog late; refused, the rest is scored.
    produced_at = NOW - 7_200_000
    values = [event(i, produced_at + 1_000 * i) for i in range(5)]
    values.insert(2, event(99, produced_at + 3_600_000))
    recs = [
        SimpleNamespace(offset=i, value=v, timestamp=produced_at + 1_000 * i)
        for i, v in enumerate(values)
    ]
    det = Detector(DetectorConfig(allowed_lateness_ms=0), kinds=("account",))
    produced, metrics = Produced(), Metrics()
    read_usage(
        recs, 3, det, produced, topic="usage", limits=Limits(), received_ms=NOW, metrics=metrics
    )
    (dead,) = produced.dead
    assert dead.source_offset == 2 and dead.rejection.field == "ts"
    assert "ahead of its Kafka record's timestamp" in dead.rejection.problem
    assert metrics.late == 0 and produced.forwards[0].offsets.tolist() == [0, 1, 3, 4, 5]
    # a record without a timestamp (-1 or None: its producer set none; one in seconds reads
    # as 1970) is bounded by the worker's clock alone: the event is taken, and the backlog's
    # later events are late
    for none in (-1, None, produced_at // 1000):
        recs[2].timestamp = none
        det = Detector(DetectorConfig(allowed_lateness_ms=0), kinds=("account",))
        produced = Produced()
        read_usage(
            recs, 3, det, produced, topic="usage", limits=Limits(), received_ms=NOW,
            metrics=Metrics(),
        )  # fmt: skip
        assert 2 in produced.forwards[0].offsets.tolist()
        assert [d.rejection for d in produced.dead] == [LATE] * 3


def test_an_event_older_than_clickhouse_keeps_scores_is_a_dead_letter_by_default() -> None:
    # Its window's rows would be dropped by the tables' TTL as they are written: a silent loss.
    day = 86_400_000
    _, produced, _ = read([event(0, NOW - 80 * day), event(1, NOW - 100 * day)])
    (dead,) = produced.dead
    assert dead.source_offset == 1 and dead.rejection.field == "ts"
    assert dead.rejection.problem.endswith(f"; max_past_skew_ms is {MAX_PAST_SKEW_MS}")
    assert produced.forwards[0].offsets.tolist() == [0]
    # the bound is a day inside what every table of scores keeps
    ddl = Path(schemas.ddl.__file__).parent
    statements = [s for f in sorted(ddl.glob("*.sql")) for s in f.read_text().split(";")]
    for table, column in schemas.ddl.KEPT_BY.items():
        (sql,) = [
            s for s in statements if f"CREATE TABLE IF NOT EXISTS {{database}}.{table}\n" in s
        ]
        assert f"TTL toDateTime({column}) + INTERVAL {SCORES_KEPT_DAYS} DAY" in sql, table
    kept = f"+ INTERVAL {SCORES_KEPT_DAYS} DAY"
    tables = {re.findall(r"\{database\}\.(\w+)\n", s)[0] for s in statements if kept in s}
    assert tables == set(schemas.ddl.KEPT_BY)  # and no other table keeps scores 90 days
    assert (SCORES_KEPT_DAYS - 1) * day == MAX_PAST_SKEW_MS


def test_events_not_keyed_by_their_account_are_counted_and_still_scored() -> None:
    recs = [
        SimpleNamespace(offset=i, value=event(i, NOW - 1_000 * i, account="acct-1"), key=key)
        for i, key in enumerate([b"acct-1", None, b"", b"sk-secret-api-key"])
    ]
    det = Detector(DetectorConfig(allowed_lateness_ms=0), kinds=("account",))
    produced, metrics = Produced(), Metrics()
    read_usage(
        recs, 3, det, produced, topic="usage", limits=Limits(), received_ms=NOW, metrics=metrics
    )
    assert metrics.miskeyed == 3 and not produced.dead
    assert sorted(produced.forwards[0].offsets.tolist()) == [0, 1, 2, 3]
    # keyed by their accounts, on the partitions Kafka's murmur2 gives them or not (a
    # librdkafka producer with its default CRC32 partitioner beside Java or Python clients)
    where = {a: int(kafka_partitions([a.encode()], 8)[0]) for a in ("x", "y", "z")}
    recs = [
        SimpleNamespace(offset=i, value=event(i, NOW, account=a), key=a.encode())
        for i, a in enumerate(["x", "y", "z", "x"])
    ]
    for partition in range(8):
        metrics = Metrics()
        read_usage(
            recs, partition, Detector(kinds=("account",)), Produced(), topic="usage",
            limits=Limits(), received_ms=NOW, metrics=metrics, partitions=8,
        )  # fmt: skip
        elsewhere = sum(where[a] != partition for a in ("x", "y", "z", "x"))
        assert metrics.miskeyed == elsewhere, partition
