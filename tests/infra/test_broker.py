"""The embedded broker cleans up after itself: a stopped broker leaves no directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from infra.broker import EmbeddedBroker, ensure_topics
from streams.engine import EngineConfig

pytestmark = pytest.mark.kafka


def test_a_stopped_broker_removes_the_directory_it_made(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        assert broker.log_path is not None
        made = broker.log_path.parent
        assert made.is_dir()
    assert not made.exists()

    given = tmp_path / "logs"
    given.mkdir()
    with EmbeddedBroker(log_dir=given) as broker:
        pass
    assert (given / "tansu.log").exists()  # a directory it was given is not its to remove


def test_topics_take_the_replication_asked_for_or_the_clusters_default() -> None:
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, {"by-default": 2})  # -1: default.replication.factor
        ensure_topics(broker.bootstrap, {"one-replica": 1}, replication_factor=1)
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            topics = admin.describe_topics(["by-default", "one-replica"])
            described = {t["name"]: t for t in topics}
        finally:
            admin.close()
    assert len(described["by-default"]["partitions"]) == 2
    for topic in described.values():  # one broker: one replica either way
        assert all(p["replica_nodes"] for p in topic["partitions"])
        assert all(len(p["replica_nodes"]) == 1 for p in topic["partitions"])


@pytest.mark.parametrize("bad", [0, -2])
def test_a_replication_factor_that_cannot_be_is_refused_at_start(bad: int) -> None:
    with pytest.raises(ValueError, match="replication_factor must be -1"):
        EngineConfig("127.0.0.1:9092", replication_factor=bad)
