"""Every knob of a worker's engine: its Kafka and consumer-group settings, when it checkpoints
and flushes, what it refuses as poison, and how long it retries failing outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.kafka_auth import KafkaAuth
from models.config import DetectorConfig
from schemas.topics import Topics
from streams.processors import MAX_PAST_SKEW_MS, Limits
from streams.publish import MAX_REQUEST_BYTES

__all__ = ["EngineConfig"]


@dataclass
class EngineConfig:
    bootstrap: str
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    checkpoint_seconds: float = 10.0
    # After windows are scored or a checkpoint taken, freed heap memory goes back to the system
    # at most this often (`streams.memory`; 0: within a second of each, None: never).
    memory_return_seconds: float | None = 10.0
    # A safety net for a stream that stops: wall-clock silence cannot tell a stopped stream from
    # a paused one (a rebalance, a slow producer), and events for a window closed this way
    # count as late. A known end of stream uses Engine.request_flush instead.
    idle_flush_seconds: float = 60.0
    # How far (event time) one partition may run ahead of this worker's slowest backlogged one.
    max_skew_ms: int = 120_000
    max_records: int = 5_000
    client_id: str = "distillguard"
    group_prefix: str = "distillguard"
    internal_partitions: int = 8
    # Replicas of the internal topics the engine creates (-1: the cluster's default).
    replication_factor: int = -1
    # SASL and TLS for every Kafka client of the engine (PLAINTEXT by default).
    kafka_auth: KafkaAuth = field(default_factory=KafkaAuth)
    # The topics it reads and writes (the contract's names by default).
    topics: Topics = field(default_factory=Topics)
    # -- poison messages -----------------------------------------------------------------------
    # A longer input message is dead-lettered by reference (its first 256 bytes and its size).
    # At most half the producer's limit, so whatever the worker derives from a message (an event
    # forwarded by block: at most the message plus a few hundred bytes) can always be written.
    max_message_bytes: int = 1024 * 1024
    # How far an event's time may be ahead of the worker's clock when it reads it, and ahead of
    # its Kafka record's timestamp (when it was produced: what bounds it in a backlog read hours
    # later, when an hour-fast event is no longer ahead of the worker's clock). Clocks on NTP
    # agree to well under a second and an event is written after the request it describes, so
    # an event further ahead has a wrong clock or a unit or time-zone bug (local time labelled
    # UTC is off by whole hours: a 1 h bound would let UTC+1 through). Whatever is accepted can
    # move its partition's watermark at most this far past real time, which makes at most this
    # much of the partition's later traffic late; a worker whose own clock is slow by less than
    # this still accepts current traffic.
    max_future_skew_ms: int | None = 300_000
    # How far behind; None: no bound. An old event cannot move a watermark (it is scored in its
    # window, or dead-lettered as late), and the input's retention bounds how old a legitimate
    # event is when read (a backlog after an outage, a topic read again from the start); but
    # ClickHouse drops the scores of windows older than it keeps them as they are written, so
    # by default an event that far behind is a dead letter with its reason, not a silent loss.
    max_past_skew_ms: int | None = MAX_PAST_SKEW_MS
    # -- outputs -------------------------------------------------------------------------------
    # A batch whose outputs fail is retried after 0.5, 1, 2, ... up to 30 s between attempts;
    # after output_give_up_seconds the stage stops (Engine.failed) and the worker exits.
    output_retry_initial_seconds: float = 0.5
    output_retry_max_seconds: float = 30.0
    output_give_up_seconds: float = 300.0
    # A graceful stop waits this long for the batches in hand, then drops them (uncheckpointed).
    stop_timeout_seconds: float = 30.0
    # -- input ---------------------------------------------------------------------------------
    # A stage with nothing to read whose consumer has had no fetch answered for this long is
    # cut off from the brokers (a fetch waits 0.5 s for records, so an idle healthy one is
    # answered twice a second): /health says degraded, with the reason, until one is.
    read_silence_seconds: float = 30.0
    # -- consumer groups -----------------------------------------------------------------------
    # A crashed worker's partitions move to another after about session_timeout + a rebalance:
    # 6 s is the smallest session a stock Kafka broker accepts (group.min.session.timeout.ms),
    # measured 11 s to take over on Tansu (19 s with aiokafka's 10 s default, ~100 s with
    # Faust's 60 s). A stopping worker leaves its groups at once (aiokafka's stop).
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    # How long the broker waits for members to rejoin in a rebalance: covers a revocation's
    # checkpoint (which waits up to a third of it for the batch in hand to be published).
    rebalance_timeout_ms: int = 30_000

    def __post_init__(self) -> None:
        if not 0 < self.max_message_bytes <= MAX_REQUEST_BYTES // 2:
            raise ValueError(
                f"max_message_bytes must be in 1..{MAX_REQUEST_BYTES // 2} (half the producer's "
                f"max_request_size), got {self.max_message_bytes}"
            )
        if not 0 < self.output_retry_initial_seconds <= self.output_retry_max_seconds:
            raise ValueError("need 0 < output_retry_initial_seconds <= output_retry_max_seconds")
        if self.memory_return_seconds is not None and self.memory_return_seconds < 0:
            raise ValueError("memory_return_seconds must be >= 0 (or None: never)")
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise ValueError(
                f"replication_factor must be -1 (the cluster's default) or >= 1, "
                f"got {self.replication_factor}"
            )
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ValueError("need 0 < heartbeat_interval_ms < session_timeout_ms")

    @property
    def limits(self) -> Limits:
        """What the accounts stage refuses before an event reaches a detector."""
        return Limits(self.max_message_bytes, self.max_future_skew_ms, self.max_past_skew_ms)

    @property
    def max_poll_interval_ms(self) -> int:
        """Longer than a stage may go without reading (retrying a batch until it gives up), so a
        worker keeps its partitions while it retries and leaves its groups when it stops."""
        return int(max(300.0, self.output_give_up_seconds + 60.0) * 1000)
