"""The worker's ``/metrics`` in the Prometheus text format, through ``prometheus_client``.

The engine counts in plain attributes on its hot path (`Metrics`, the ClickHouse sink's
`SinkStats`); `WorkerCollector` reads them when Prometheus scrapes, with a
HELP and a TYPE line per metric, and the two latency histograms (a batch from read to published,
one ClickHouse insert) are `prometheus_client.Histogram`s the engine and the sink observe.

Examples
--------
>>> m, s = Metrics(events_in=3, lag={"accounts": 2}), SinkStats(expired={"entity_scores": 4})
>>> m.batch_latency.observe(0.004)
>>> text = render(WorkerCollector(m, s, lambda: None))
>>> "distillguard_events_in_total 3.0" in text
True
>>> 'distillguard_batch_latency_seconds_bucket{le="0.005"} 1.0' in text
True
>>> 'distillguard_consumer_lag{stage="accounts"} 2.0' in text
True
>>> 'distillguard_clickhouse_rows_expired_total{table="entity_scores"} 4.0' in text
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "Metrics",
    "SinkStats",
    "WorkerCollector",
    "latency_histogram",
    "render",
]

# Seconds, from a small batch (~1 ms) to an insert stuck behind a slow ClickHouse (10 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def latency_histogram(name: str, documentation: str) -> Histogram:
    """A histogram of seconds not registered anywhere: its owner observes it, `WorkerCollector`
    exports it."""
    return Histogram(name, documentation, buckets=LATENCY_BUCKETS, registry=None)


@dataclass
class SinkStats:
    """Counters of the ClickHouse sink: inserts, rows, time spent inserting."""

    inserts: int = 0
    rows: int = 0
    last_insert_seconds: float = 0.0
    total_insert_seconds: float = 0.0
    by_table: dict[str, int] = field(default_factory=dict)
    # Rows sent for windows older than the score tables keep (their TTL): ClickHouse drops them
    # as they are written. By table.
    expired: dict[str, int] = field(default_factory=dict)
    insert_latency: Histogram = field(
        default_factory=lambda: latency_histogram(
            "distillguard_clickhouse_insert_latency_seconds", "Seconds one ClickHouse insert took."
        )
    )


@dataclass
class Metrics:
    """Counters the worker exports on /metrics."""

    events_in: int = 0
    forwarded: int = 0
    block_events_in: int = 0
    # Forwarded events the block stage found after their block window had closed: put behind
    # a later message's progress by a Kafka send retried after a failure (lost to it), or sent
    # again as rows by a worker from before columns replaying after a restart.
    block_late: int = 0
    # Forwarded events at offsets of their account partition the block stage had added already:
    # sent again by a partition replaying after a restart.
    block_duplicates: int = 0
    summaries_out: int = 0
    summaries_in: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    late: int = 0
    # Valid events not where their account_id puts them (no key, another key, or placed by a
    # partitioner other than Kafka's murmur2): the contract keys usage events by account, and
    # an account spread over partitions is scored in parts, its window rows replacing each
    # other in entity_scores.
    miskeyed: int = 0
    windows_scored: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    batch_seconds: float = 0.0
    # Failed attempts to write outputs (Kafka sends, ClickHouse inserts, checkpoints).
    output_errors: int = 0
    # Freed memory handed back to the system (`streams.memory.MemoryReturn`).
    memory_trims: int = 0
    memory_trim_seconds: float = 0.0
    batch_latency: Histogram = field(
        default_factory=lambda: latency_histogram(
            "distillguard_batch_latency_seconds", "Seconds a batch took from read to published."
        )
    )


class WorkerCollector(Collector):
    """Reads the engine's counters and the sink's statistics at scrape time.

    ``degraded`` says whether an output is failing (the worker's ``/health`` reason, or None).
    """

    def __init__(
        self, metrics: Metrics, sink: SinkStats, degraded: Callable[[], object | None]
    ) -> None:
        self.metrics = metrics
        self.sink = sink
        self.degraded = degraded

    def collect(self) -> Iterator[Metric]:
        m, s = self.metrics, self.sink

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def labelled(
            family: CounterMetricFamily | GaugeMetricFamily, values: dict[str, int]
        ) -> Metric:
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            return family

        yield counter(
            "distillguard_events_in_total", "Messages read from the usage topic.", m.events_in
        )
        yield counter(
            "distillguard_dead_letters_total",
            "Messages dead-lettered (invalid, oversized, too far in time, late).",
            m.dead_letters,
        )
        yield counter(
            "distillguard_duplicates_total",
            "Events dropped as redeliveries of an event_id.",
            m.duplicates,
        )
        yield counter(
            "distillguard_late_events_total",
            "Events that arrived after their window closed.",
            m.late,
        )
        yield counter(
            "distillguard_miskeyed_events_total",
            "Valid events not on the partition their account_id key gives (no key, another "
            "key, or another partitioner than Kafka's murmur2).",
            m.miskeyed,
        )
        yield counter(
            "distillguard_block_late_events_total",
            "Forwarded events that reached the IP-block stage after their block window closed "
            "(sends retried out of order).",
            m.block_late,
        )
        yield counter(
            "distillguard_block_duplicate_events_total",
            "Forwarded events the IP-block stage had added already (sent again by a replay).",
            m.block_duplicates,
        )
        yield labelled(
            CounterMetricFamily(
                "distillguard_windows_scored_total",
                "Entity windows scored, by kind.",
                labels=["kind"],
            ),
            m.windows_scored,
        )
        yield labelled(
            CounterMetricFamily(
                "distillguard_actions_total",
                "Enforcement events emitted, by action.",
                labels=["action"],
            ),
            m.actions,
        )
        yield labelled(
            GaugeMetricFamily(
                "distillguard_consumer_lag",
                "Messages not yet read, by stage (high watermark minus position).",
                labels=["stage"],
            ),
            m.lag,
        )
        yield counter(
            "distillguard_checkpoints_total",
            "Checkpoints saved with their offsets committed.",
            m.checkpoints,
        )
        yield counter(
            "distillguard_output_errors_total",
            "Failed attempts to write outputs (Kafka sends, ClickHouse inserts, checkpoints).",
            m.output_errors,
        )
        yield gauge(
            "distillguard_degraded",
            "1 while an output is failing and being retried (the reason is on /health).",
            int(self.degraded() is not None),
        )
        yield counter(
            "distillguard_clickhouse_inserts_total", "ClickHouse inserts written.", s.inserts
        )
        yield labelled(
            CounterMetricFamily(
                "distillguard_clickhouse_rows_expired_total",
                "Rows written for windows older than the score tables keep (their TTL, 90 days): "
                "ClickHouse drops them as they are written. By table.",
                labels=["table"],
            ),
            s.expired,
        )
        yield counter(
            "distillguard_clickhouse_insert_seconds_total",
            "Seconds spent in ClickHouse inserts.",
            s.total_insert_seconds,
        )
        yield gauge(
            "distillguard_clickhouse_insert_seconds_last",
            "Seconds the latest ClickHouse insert took.",
            s.last_insert_seconds,
        )
        yield gauge(
            "distillguard_batch_seconds_last",
            "Seconds the latest batch took from read to published.",
            m.batch_seconds,
        )
        yield counter(
            "distillguard_memory_trims_total",
            "Times the worker handed freed heap memory back to the system (after windows and "
            "checkpoints).",
            m.memory_trims,
        )
        yield gauge(
            "distillguard_memory_trim_seconds_last",
            "Seconds the latest hand-back of freed memory took.",
            m.memory_trim_seconds,
        )
        yield from m.batch_latency.collect()
        yield from s.insert_latency.collect()


def render(collector: Collector) -> str:
    """The Prometheus text exposition of one collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()
