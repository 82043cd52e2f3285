"""What a stage does when the checkpoint store fails while it takes partitions, without a broker:
the stage is handed a `Delivery` stand-in, as it is handed the real one by the engine."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import TopicPartition

from models.detector import Detector, Population
from models.events import UsageEvent
from streams.config import EngineConfig
from streams.metrics import Metrics
from streams.processors import Produced, SuspectTable
from streams.publish import OutputsUnavailable
from streams.retries import Abandoned
from streams.stages import AccountStage, BlockStage, CampaignStage, Member

GAVE_UP = "accounts checkpoint: loading a checkpoint from ClickHouse has failed for 300 s"


class FailingLoads:
    """A delivery whose checkpoint loads end in ``exc`` (what `Delivery.load` raises when its
    retries give up, or when the worker stops meanwhile)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.fatal: OutputsUnavailable | None = None
        self.loads = 0

    async def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        self.loads += 1
        raise self.exc


def make(stage_of: type[Member], delivery: Any) -> Member:
    """A fresh stage of kind ``stage_of`` writing through ``delivery``; its broker address is
    never contacted."""
    config = EngineConfig("127.0.0.1:1")
    if issubclass(stage_of, CampaignStage):
        return stage_of(config, delivery, Metrics(), lambda: {0})
    return stage_of(config, delivery, Metrics())  # type: ignore[call-arg]


def take(
    stage_of: type[Member], exc: Exception, loads: FailingLoads | None = None
) -> tuple[FailingLoads, Member, Exception | None]:
    """Assign partition 0 to a fresh stage whose loads fail (or are ``loads``); then run its
    loop briefly."""

    async def run() -> tuple[FailingLoads, Member, Exception | None]:
        delivery = loads or FailingLoads(exc)
        stage = make(stage_of, delivery)  # the loop stops before a fetch
        await stage.on_partitions_assigned([TopicPartition(stage.topic, 0)])
        stopping = asyncio.Event()
        if delivery.fatal is None:
            stopping.set()  # nothing fatal: the loop would fetch; stop it at once instead
        raised = None
        try:
            await asyncio.wait_for(stage.run(stopping), 5)  # type: ignore[attr-defined]
        except OutputsUnavailable as err:
            raised = err
        finally:
            await stage.consumer.stop()
        return delivery, stage, raised

    return asyncio.run(run())


@pytest.mark.parametrize("stage_of", [AccountStage, CampaignStage])
def test_a_checkpoint_that_cannot_be_loaded_stops_the_stage_with_the_cause(stage_of) -> None:
    delivery, stage, raised = take(stage_of, OutputsUnavailable(GAVE_UP))
    # Found in a rebalance callback (aiokafka would only log it), raised by the stage's loop,
    # which is what Engine.failed reports and the worker exits on.
    assert delivery.fatal is not None and str(delivery.fatal) == GAVE_UP
    assert raised is delivery.fatal
    assert delivery.loads >= 1
    # No partition was taken without its checkpoint.
    if isinstance(stage, AccountStage):
        assert stage.parts == {} and stage.next_offset == {}
    else:
        assert isinstance(stage, CampaignStage) and not stage.owned


@pytest.mark.parametrize("stage_of", [AccountStage, CampaignStage])
def test_a_stop_while_loading_a_checkpoint_takes_no_partition_and_is_not_fatal(stage_of) -> None:
    delivery, stage, raised = take(stage_of, Abandoned("accounts checkpoint"))
    assert delivery.fatal is None and raised is None
    if isinstance(stage, AccountStage):
        assert stage.parts == {}
    else:
        assert isinstance(stage, CampaignStage) and not stage.owned


class UnreadableCheckpoint(FailingLoads):
    """A delivery whose checkpoint loads, but holds what this version cannot restore (written
    by a newer one, or damaged)."""

    async def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        self.loads += 1
        return 5, b"not a checkpoint of this version"


@pytest.mark.parametrize("stage_of", [AccountStage, CampaignStage])
def test_a_checkpoint_that_cannot_be_restored_stops_the_stage_instead_of_stalling(stage_of) -> None:
    """Raised in the rebalance callback, aiokafka would only log it: the partition would stay
    assigned, never read, its lag growing with nothing to say why."""
    loads = UnreadableCheckpoint(RuntimeError("unused"))
    delivery, stage, raised = take(stage_of, RuntimeError("unused"), loads)
    assert raised is not None and raised is delivery.fatal
    message = str(raised)
    assert message.startswith(f"{stage.name}: a checkpoint in detector_state cannot be restored")
    assert f"stage = '{stage.name}'" in message and "\n" not in message
    if isinstance(stage, AccountStage):
        assert stage.parts == {}
    else:
        assert isinstance(stage, CampaignStage) and not stage.owned


class SavingCheckpoints:
    """A delivery with no checkpoint to load, whose saves succeed while ``ok``."""

    def __init__(self) -> None:
        self.fatal: OutputsUnavailable | None = None
        self.saved: list[list[tuple[str, int, int, bytes]]] = []
        self.ok = True

    async def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        return None

    async def checkpoint(self, stage, rows, offsets, commit) -> bool:
        if self.ok:
            self.saved.append(rows)
        return self.ok


@pytest.mark.parametrize("stage_of", [AccountStage, CampaignStage])
def test_a_periodic_checkpoint_saves_only_a_state_that_changed(stage_of) -> None:
    """An idle worker does not re-pickle every entity every interval (at 1M accounts, ~0.7 KB
    of transient memory per entity each time); a failed save is taken again; a revocation's
    checkpoint of some partitions saves them whatever, and leaves the rest unsaved."""

    async def run() -> None:
        delivery = SavingCheckpoints()
        stage = make(stage_of, delivery)
        await stage.on_partitions_assigned([TopicPartition(stage.topic, p) for p in (0, 1)])
        if isinstance(stage, AccountStage):
            stage.next_offset.update({0: 5, 1: 7})  # as reading records sets them
        else:
            stage.next_offset = 5  # type: ignore[attr-defined]
        try:
            await stage.checkpoint()  # type: ignore[attr-defined]
            assert delivery.saved == []  # restored as it was: nothing to save
            stage.changed()
            delivery.ok = False
            await stage.checkpoint()  # type: ignore[attr-defined]
            assert delivery.saved == [] and stage.unsaved
            delivery.ok = True
            await stage.checkpoint()  # type: ignore[attr-defined]
            assert len(delivery.saved) == 1 and not stage.unsaved
            await stage.checkpoint()  # type: ignore[attr-defined]
            assert len(delivery.saved) == 1
            if isinstance(stage, AccountStage):
                stage.changed()
                await stage.checkpoint([0])
                assert [r[1] for r in delivery.saved[-1]] == [0, -1]  # partition 0, population
                assert stage.unsaved  # partition 1's change is not saved yet
                await stage.checkpoint()
                assert len(delivery.saved) == 3 and not stage.unsaved
        finally:
            await stage.consumer.stop()

    asyncio.run(run())


def test_windows_closed_by_an_idle_flush_are_checkpointed_even_before_they_are_scored() -> None:
    """A silent partition's open windows are closed by the idle flush. While another partition
    still holds that window's end, nothing is scored and the batch is empty, but the state has
    changed: a checkpoint skipped then would, after a crash, bring the windows back open, and the
    replayed events would join them where the first run counted them late."""

    def ev(i: int, ts: int, account: str) -> UsageEvent:
        return UsageEvent(f"e{i}", ts, account, "10.0.0.1", "10.0.0.0/24", "m", 10, 20)

    async def run() -> None:
        delivery = SavingCheckpoints()
        stage = AccountStage(EngineConfig("127.0.0.1:1"), delivery, Metrics())  # type: ignore[arg-type]
        await stage.on_partitions_assigned([TopicPartition(stage.topic, p) for p in (0, 1)])
        quiet, busy = stage.parts[0], stage.parts[1]
        for i, t in enumerate(range(0, 75_000, 500)):
            quiet.add(ev(i, t, "a"))
            busy.add(ev(10**6 + i, t, "b"))
        busy.add(ev(2 * 10**6, 100_000, "b"))  # a little further on, its window still open
        stage.next_offset.update({0: 10, 1: 10})
        stage.changed()
        try:
            await stage.checkpoint()
            assert len(delivery.saved) == 1 and not stage.unsaved
            now = time.monotonic()
            stage.last_seen.update({0: now - 3600, 1: now})
            batch = Produced()
            stage._idle_flush(now, batch, {0: False, 1: False})  # both caught up
            assert not quiet.has_open_windows and not batch  # closed, nothing scored yet
            await stage.checkpoint()
            assert len(delivery.saved) == 2
        finally:
            await stage.consumer.stop()

    asyncio.run(run())


class Seeking:
    """A consumer stand-in that records where it was asked to read from."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def stop(self) -> None:
        pass


def test_a_restored_partition_is_checkpointed_once_so_its_offset_is_committed() -> None:
    """A checkpoint saved but not committed (the worker died between the two) is committed by
    the next owner's first periodic checkpoint, even with nothing new to read."""

    class Restoring(SavingCheckpoints):
        async def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
            if partition < 0:
                return None  # no population saved
            return 5, Detector(kinds=("account",)).partition_state()

    async def run() -> None:
        delivery = Restoring()
        stage = AccountStage(EngineConfig("127.0.0.1:1"), delivery, Metrics())  # type: ignore[arg-type]
        await stage.consumer.stop()
        stage.consumer = Seeking()  # type: ignore[assignment]
        await stage.on_partitions_assigned([TopicPartition(stage.topic, 0)])
        try:
            assert stage.consumer.seeks == [(TopicPartition(stage.topic, 0), 5)]  # type: ignore[attr-defined]
            assert stage.next_offset == {0: 5} and stage.unsaved
            await stage.checkpoint()
            await stage.checkpoint()
            assert len(delivery.saved) == 1 and not stage.unsaved
        finally:
            await stage.consumer.stop()

    asyncio.run(run())


class BrokenState(AccountStage):
    def partition_blob(self, partition: int) -> bytes:
        raise RuntimeError("cannot pickle this state")


class BrokenLinking(CampaignStage):
    def _blob(self) -> bytes:
        raise RuntimeError("cannot pickle this state")


@pytest.mark.parametrize("stage_of", [BrokenState, BrokenLinking])
def test_a_revoked_partition_is_let_go_even_when_its_checkpoint_fails(stage_of) -> None:
    """aiokafka logs what a revocation callback raises and goes on. A revoked partition kept in
    the stage would never be read again, and every later window end would wait for it."""

    async def run() -> None:
        delivery = SavingCheckpoints()
        stage = make(stage_of, delivery)
        await stage.on_partitions_assigned([TopicPartition(stage.topic, p) for p in (0, 1)])
        if isinstance(stage, AccountStage):
            stage.next_offset.update({0: 5, 1: 7})
        else:
            stage.next_offset = 5  # type: ignore[attr-defined]
        stage.changed()
        try:
            with pytest.raises(RuntimeError, match="cannot pickle"):
                await stage.on_partitions_revoked([TopicPartition(stage.topic, 0)])
            assert delivery.saved == []  # nothing half-saved
            if isinstance(stage, AccountStage):
                assert list(stage.parts) == [1] and list(stage.next_offset) == [1]
            else:
                assert isinstance(stage, CampaignStage)
                assert not stage.owned and stage.next_offset is None
        finally:
            await stage.consumer.stop()

    asyncio.run(run())


class RestoreRunsOutOfMemory(AccountStage):
    def restore_partition(self, partition: int, det, blob: bytes) -> None:
        raise MemoryError


class GoodPopulationLoads(FailingLoads):
    """A delivery whose population checkpoint restores and whose partition 0 has a state."""

    async def load(self, stage: str, partition: int) -> tuple[int, bytes] | None:
        self.loads += 1
        if partition == -1:
            return 0, Population(EngineConfig("127.0.0.1:1").detector).snapshot()
        return 5, b"a state"


def test_a_failure_that_is_not_the_checkpoints_stops_the_stage_without_blaming_it() -> None:
    """Running out of memory while restoring is not a damaged checkpoint: the worker stops, but
    is not told to delete a good one."""
    loads = GoodPopulationLoads(RuntimeError("unused"))
    delivery, stage, raised = take(RestoreRunsOutOfMemory, RuntimeError("unused"), loads)
    assert raised is not None and raised is delivery.fatal
    message = str(raised)
    assert message.startswith("accounts: taking partitions failed: MemoryError")
    assert "detector_state" not in message
    assert isinstance(stage, AccountStage) and stage.parts == {}


def test_a_revoked_block_partition_takes_its_upstream_progress_with_it() -> None:
    """Saved with the partition's checkpoint, then let go: assigned again with no checkpoint, the
    partition must not close its windows on the progress it had heard before (the replayed
    events would then be counted late)."""

    async def run() -> None:
        delivery = SavingCheckpoints()
        stage = BlockStage(
            EngineConfig("127.0.0.1:1"),
            delivery,  # type: ignore[arg-type]
            Metrics(),
            lambda: {0, 1},
            SuspectTable(),
        )
        await stage.on_partitions_assigned([TopicPartition(stage.topic, p) for p in (0, 1)])
        stage.upstream.update({0: {0: 120_000, 1: 60_000}, 1: {0: 120_000}})
        stage.next_offset.update({0: 5, 1: 7})
        stage.changed()
        try:
            await stage.on_partitions_revoked([TopicPartition(stage.topic, 0)])
            assert [row[1] for row in delivery.saved[-1]] == [0, -1]  # saved with its progress
            assert list(stage.upstream) == [1]
            await stage.on_partitions_assigned([TopicPartition(stage.topic, 0)])  # no checkpoint
            assert 0 in stage.parts and 0 not in stage.upstream
        finally:
            await stage.consumer.stop()

    asyncio.run(run())
