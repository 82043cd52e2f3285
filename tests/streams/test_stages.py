"""What a stage does when the checkpoint store fails while it takes partitions, without a broker:
the stage is handed a `Delivery` stand-in, as it is handed the real one by the engine."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from streams.config import EngineConfig
from streams.delivery import Abandoned
from streams.metrics import Metrics
from streams.publish import OutputsUnavailable
from streams.stages import AccountStage, CampaignStage, Member

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


def take(stage_of: type[Member], exc: Exception) -> tuple[FailingLoads, Member, Exception | None]:
    """Assign partition 0 to a fresh stage whose loads fail; then run its loop briefly."""

    async def run() -> tuple[FailingLoads, Member, Exception | None]:
        delivery = FailingLoads(exc)
        config = EngineConfig("127.0.0.1:1")  # never contacted: the loop stops before a fetch
        if stage_of is CampaignStage:
            stage: Member = CampaignStage(config, delivery, Metrics(), lambda: {0})  # type: ignore[arg-type]
        else:
            stage = AccountStage(config, delivery, Metrics())  # type: ignore[arg-type]
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
