"""Writing traffic to a Kafka topic at a chosen rate, as a gateway would (kafka-python producer)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from kafka import KafkaProducer

from infra.kafka_auth import KafkaAuth

__all__ = ["produce"]


def produce(
    messages: Iterable[tuple[bytes, bytes]],
    bootstrap: str,
    topic: str,
    rate: float = 0.0,
    batch: int = 500,
    on_progress: Callable[[int], None] | None = None,
    auth: KafkaAuth | None = None,
) -> int:
    """Send (key, value) messages to ``topic``; ``rate`` messages/s (0 = as fast as possible).

    The pace is kept per batch of ``batch`` messages against the wall clock, so a slow moment is
    caught up rather than accumulated. Returns the number of messages sent, all acknowledged;
    raises if the broker failed to acknowledge any.
    """
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        **(auth or KafkaAuth()).client_kwargs(),
    )
    sent = 0
    failed: list[BaseException] = []
    started = time.monotonic()
    try:
        for key, value in messages:
            future = producer.send(topic, key=key or None, value=value)
            future.add_errback(failed.append)
            sent += 1
            if on_progress is not None and sent % batch == 0:
                on_progress(sent)
            if rate > 0 and sent % batch == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    if failed:
        # Never report traffic as sent that the broker did not acknowledge.
        raise RuntimeError(f"{len(failed)} of {sent} messages were not acknowledged: {failed[0]!r}")
    return sent
