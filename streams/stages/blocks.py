"""The blocks stage: reads ``distillguard.events-by-block``, the accepted events keyed by IP block.

Each IP block's state lives with the worker that owns its partition. Block windows close when
every account partition has closed them (the forwarded progress says so), never on the stage's
own clock. Block actions name as members the suspects seen behind the block: the worker follows
``distillguard.suspects`` into a `streams.processors.SuspectTable`, which the stage hands to its
detectors as data.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from models.detector import Detector, MemberScores
from models.features import EntityKind
from streams.config import EngineConfig
from streams.delivery import Delivery
from streams.metrics import Metrics
from streams.processors import Produced, SuspectTable, read_forwards
from streams.stages.progress import Backlog
from streams.stages.stage import Stage

__all__ = ["BlockStage"]


class BlockStage(Stage):
    name = "blocks"
    role = "by_block"
    kinds: tuple[EntityKind, ...] = ("ip_block",)

    def __init__(
        self,
        config: EngineConfig,
        delivery: Delivery,
        metrics: Metrics,
        sources: Callable[[], set[int] | None],
        suspects: SuspectTable,
    ) -> None:
        super().__init__(config, delivery, metrics)
        self.sources = sources  # the account partitions
        self.suspects = suspects  # block members: the accounts found suspect
        # Per block partition: per upstream (account) partition, the time before which all of
        # its windows are closed. Block windows close at the minimum over upstream partitions,
        # so however unevenly the account partitions progress, no event arrives late here.
        self.upstream: dict[int, dict[int, int]] = {}
        # Per block partition: per account partition, the highest of its offsets whose event
        # was added (an event forwarded again by a replay of that partition is not added twice).
        self.added: dict[int, dict[int, int]] = {}

    def _detector(self) -> Detector:
        return Detector(
            self.config.detector,
            kinds=self.kinds,
            population=self.population,
            external_watermark=True,
        )

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await super().on_partitions_revoked(revoked)  # checkpointed with their progress
        finally:
            # A partition assigned again with no checkpoint starts its progress from nothing:
            # kept, the old times would close its windows before the replayed events arrive,
            # and they would be counted late.
            for tp in revoked:
                self.upstream.pop(tp.partition, None)
                self.added.pop(tp.partition, None)

    def members(self) -> MemberScores:
        return self.suspects.latest

    def _idle_flush(self, now: float, batch: Produced, todo: Backlog) -> None:
        """Never on its own clock: block windows close when every account partition has closed
        them (after its own flush, an account partition's heartbeat says so)."""

    def partition_blob(self, partition: int) -> bytes:
        state = (
            self.parts[partition].partition_state(),
            self.upstream.get(partition, {}),
            self.added.get(partition, {}),
        )
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore_partition(self, partition: int, det: Detector, blob: bytes) -> None:
        # A checkpoint from before offsets were kept has two parts (events came as rows, whose
        # ids its open windows checked; events sent again as columns are not checked against
        # them: stop the old workers gracefully before upgrading).
        det_state, self.upstream[partition], *added = pickle.loads(blob)
        self.added[partition] = dict(added[0]) if added else {}
        det.load_partition_state(det_state)

    def handle(self, partition: int, det: Detector, records: list[Any], batch: Produced) -> None:
        upstream = self.upstream.setdefault(partition, {})
        added = self.added.setdefault(partition, {})
        read_forwards(records, det, upstream, self.sources(), self.metrics, added)
