"""The worker reads the topic a gateway already writes and writes where it is told: every topic
name comes from the settings, and nothing goes to the contract's default names."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest

from infra.broker import ensure_topics, read_topic
from schemas.topics import DEAD_LETTERS, ENFORCEMENT, Topics
from simulator.traffic import SCENARIOS, simulate, traffic_lines
from streams.produce import produce
from streams.settings import Settings
from tests.streams.conftest import PARTITIONS, query, valid
from tests.streams.test_pipeline import engine, finish

TOPICS = Topics(
    usage="prod.gateway.usage",
    dead_letters="prod.gateway.usage.rejected",
    enforcement="trust.enforcement",
    internal_prefix="dg-prod.",
)


def test_settings_name_the_topics() -> None:
    env = {
        "DISTILLGUARD_TOPIC_USAGE_EVENTS": TOPICS.usage,
        "DISTILLGUARD_TOPIC_DEAD_LETTERS": TOPICS.dead_letters,
        "DISTILLGUARD_TOPIC_ENFORCEMENT": TOPICS.enforcement,
        "DISTILLGUARD_INTERNAL_TOPIC_PREFIX": TOPICS.internal_prefix,
    }
    assert Settings.from_env(env).topics() == TOPICS
    with pytest.raises(ValueError, match="topic names must differ"):
        Settings.from_env({"DISTILLGUARD_TOPIC_ENFORCEMENT": "api-usage-events"}).topics()
    with pytest.raises(ValueError, match="1-249 of"):
        Settings.from_env({"DISTILLGUARD_TOPIC_USAGE_EVENTS": "usage events"}).topics()


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_the_worker_reads_and_writes_the_topics_it_is_given(broker: Any, db: Any) -> None:
    traffic = simulate(replace(SCENARIOS["small"], minutes=20, benign_accounts=800))
    messages = list(traffic_lines(traffic, bad_line_rate=0.01))
    ensure_topics(broker.bootstrap, TOPICS.with_partitions(PARTITIONS))

    async def run() -> None:
        e = engine(broker, db, asyncio.Lock(), topics=TOPICS)
        await e.start()
        await asyncio.to_thread(produce, messages, broker.bootstrap, TOPICS.usage)
        await finish([e], len(messages))
        await e.stop()
        assert e.failed() is None

    asyncio.run(run())

    ((scored,),) = query(
        db, "SELECT sum(requests) FROM DB.entity_scores FINAL WHERE entity_kind = 'ip_block'"
    )
    assert scored == valid(messages)  # the block stage read the prefixed internal topic
    dead = read_topic(broker.bootstrap, TOPICS.dead_letters, 1)
    assert len(dead) == len(messages) - valid(messages) > 0
    assert {orjson.loads(v)["source"] for _, v in dead} == {TOPICS.usage}
    ((actions,),) = query(db, "SELECT count() FROM DB.enforcement_actions FINAL")
    assert len(read_topic(broker.bootstrap, TOPICS.enforcement, PARTITIONS)) >= actions > 0
    # nothing on the contract's default names
    assert not read_topic(broker.bootstrap, ENFORCEMENT, PARTITIONS, idle_ms=500)
    assert not read_topic(broker.bootstrap, DEAD_LETTERS, 1, idle_ms=500)
