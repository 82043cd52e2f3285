"""The embedded broker cleans up after itself: a stopped broker leaves no directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker

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
