"""The campaigns stage: reads ``distillguard.account-summaries`` (one partition).

The accounts stage sends each scored account window's summaries there, with its partitions'
progress. A window is linked once every account partition has scored it, over all accounts at
once, in account-id order, so the decisions do not depend on how accounts are spread over
partitions and workers (`streams.processors.CampaignLinking`).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from models.detector import DetectorOutput
from models.outputs import LinkInput
from streams.config import EngineConfig
from streams.delivery import Delivery
from streams.metrics import Metrics
from streams.processors import CampaignLinking, Produced
from streams.stages.member import Member, consumer, restored

__all__ = ["CampaignStage"]

log = logging.getLogger("distillguard.engine")


class CampaignStage(Member):
    """Links accounts into campaigns over every account partition (see `streams.stages.campaigns`).

    One partition, so one worker of the group owns it. Its state (the campaign scorer, windows
    waiting for some account partition, each account partition's progress) is checkpointed with
    the offset of its next unread message, like the other stages'.
    """

    name = "campaigns"

    def __init__(
        self,
        config: EngineConfig,
        delivery: Delivery,
        metrics: Metrics,
        sources: Callable[[], set[int] | None],
    ) -> None:
        super().__init__(config, delivery, metrics)
        self.sources = sources
        self.topic = config.topics.summaries
        self.linking = CampaignLinking(config.detector)
        self.owned = False
        self.next_offset: int | None = None
        self.consumer = consumer(config, self.name, 16 * 1024 * 1024)
        self._last_checkpoint = time.monotonic()

    @property
    def pending(self) -> dict[int, dict[tuple[int, int, int], LinkInput]]:
        """Summaries of windows not linked yet, by window end, account partition and part."""
        return self.linking.pending

    def _blob(self) -> bytes:
        return pickle.dumps(self.linking, protocol=pickle.HIGHEST_PROTOCOL)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.owned and any(tp.partition == 0 for tp in revoked):
            try:
                if await self._settle():
                    await self.checkpoint()
            finally:  # whatever the checkpoint did (see `Partitioned.on_partitions_revoked`)
                self.owned = False
                self.next_offset = None

    async def _assign(self, assigned: list[TopicPartition]) -> None:
        if not any(tp.partition == 0 for tp in assigned) or self.owned:
            return
        saved = await self.delivery.load(self.name, 0)
        self.linking = CampaignLinking(self.config.detector)
        if saved is not None:
            offset, blob = saved
            self.linking = restored(
                f"{self.name} partition 0",
                lambda: CampaignLinking.restored(pickle.loads(blob), self.config.detector),
            )
            self.consumer.seek(TopicPartition(self.topic, 0), offset)
            self.next_offset = offset
            self.changed()  # saved, perhaps not committed: see `Partitioned._assign`
        self.owned = True
        log.info("campaigns: partition 0 assigned (%s)", "restored" if saved else "fresh")

    def handle(self, records: list[Any], out: DetectorOutput) -> None:
        version = self.config.detector.version
        self.linking.handle(records, self.sources(), version, self.metrics, out)

    async def run(self, stopping: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], listener=self)
        while not stopping.is_set():
            data = await self._fetch()
            batch = self._read(data)
            del data  # the records are let go once read (see Stage._read)
            if not await self._publish(batch):
                return  # stopping
            if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_seconds:
                await self.checkpoint()
            self._record_lag()

    def _read(self, data: dict[TopicPartition, list[Any]]) -> Produced:
        batch = Produced()
        for tp, records in data.items():
            if not records:
                continue
            if not self.owned:
                self.consumer.seek(tp, records[0].offset)
                continue
            self.handle(records, batch.out)
            self.next_offset = records[-1].offset + 1
            self.changed()
        return batch

    def _record_lag(self) -> None:
        high = self.readable_end(TopicPartition(self.topic, 0)) if self.owned else None
        pos = self.next_offset
        self.metrics.lag[self.name] = (
            max(0, high - pos) if high is not None and pos is not None else 0
        )

    async def checkpoint(self) -> None:
        """Save the stage's state with its next offset, then commit that offset (never while a
        batch is in hand, see `Partitioned.checkpoint`)."""
        self._last_checkpoint = time.monotonic()
        if not self.owned or self.next_offset is None or self.in_hand or not self.unsaved:
            return
        # Taken together, before any await (`Member._save` pickles before its first).
        offset, changes = self.next_offset, self._changes
        await self._save([(0, offset, self._blob)], {0: offset}, changes)
