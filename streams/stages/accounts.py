"""The accounts stage: reads ``api-usage-events`` (keyed by account).

It validates every message (bad ones to ``api-usage-events.dlq`` and ``dead_letters``), scores
accounts, forwards accepted events keyed by IP block to ``distillguard.events-by-block``, sends
each scored account window's summaries (and its partitions' progress) to
``distillguard.account-summaries`` for the campaign stage, and publishes accounts that scored
over the member threshold to ``distillguard.suspects``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from models.detector import Detector, DetectorOutput
from models.features import EntityKind
from streams import wire
from streams.config import EngineConfig
from streams.delivery import Delivery
from streams.metrics import Metrics
from streams.processors import Produced, read_usage
from streams.stages.stage import Stage

__all__ = ["AccountStage"]

log = logging.getLogger("distillguard.engine")
MISKEYED_LOG_SECONDS = 600.0  # mis-keyed events are said once, then at most this often


class AccountStage(Stage):
    name = "accounts"
    role = "usage"
    kinds: tuple[EntityKind, ...] = ("account",)

    def __init__(self, config: EngineConfig, delivery: Delivery, metrics: Metrics) -> None:
        super().__init__(config, delivery, metrics)
        self.announced: dict[int, int] = {}  # per partition, the progress last sent downstream
        self._miskeyed_said: float | None = None  # when mis-keyed events were last logged

    def _detector(self) -> Detector:
        # Accounts are linked into campaigns by the campaign stage, which sees every partition.
        return Detector(
            self.config.detector,
            kinds=("account", "campaign"),
            population=self.population,
            link_campaigns=False,
        )

    def handle(self, partition: int, det: Detector, records: list[Any], batch: Produced) -> None:
        before = self.metrics.miskeyed
        read_usage(
            records,
            partition,
            det,
            batch,
            topic=self.topic,
            limits=self.config.limits,
            received_ms=int(time.time() * 1000),
            metrics=self.metrics,
            partitions=len(self.consumer.partitions_for_topic(self.topic) or ()) or None,
        )
        if self.metrics.miskeyed != before:
            self._say_miskeyed(partition, self.metrics.miskeyed - before)

    def _say_miskeyed(self, partition: int, n: int) -> None:
        """One line, at most every `MISKEYED_LOG_SECONDS` (the key itself is never logged: a
        gateway may key by something secret, such as an API key)."""
        now = time.monotonic()
        if self._miskeyed_said is not None and now - self._miskeyed_said < MISKEYED_LOG_SECONDS:
            return
        self._miskeyed_said = now
        log.warning(
            "accounts stage: %d events on %s partition %d are not where their account_id "
            "puts them (no key, another key, or a partitioner other than Kafka's murmur2; %d "
            "since the worker started): an account whose events land on several partitions is "
            "scored in parts, and its window rows replace each other in entity_scores. Fix: "
            "produce with key=account_id (librdkafka: also partitioner murmur2_random)",
            n,
            self.topic,
            partition,
            self.metrics.miskeyed,
        )

    def scored(self, partition: int, out: DetectorOutput, batch: Produced) -> None:
        for x in out.summaries:
            batch.summaries.extend(wire.summaries(x, partition))
        out.summaries.clear()
        batch.out.extend(out)

    def after_scoring(self, out: DetectorOutput, batch: Produced) -> None:
        # Progress reaches every block partition, even those no event of ours went to, however
        # the windows closed (watermark or flush). It is what is *scored*: the campaign stage
        # links a window once every partition's summaries of it are in.
        for p, det in self.parts.items():
            scored = det.scored_through_ms
            if scored > self.announced.get(p, -1):
                batch.heartbeats.append(wire.progress(p, scored))
                self.announced[p] = scored
        threshold = self.config.detector.member_score
        for sw in out.scored:
            if sw.kind != "account":
                continue
            for i in np.flatnonzero(sw.score >= threshold).tolist():
                batch.suspects.append(
                    (sw.ids[i].encode(), wire.suspect(sw.ids[i], sw.end_ms, float(sw.score[i])))
                )
