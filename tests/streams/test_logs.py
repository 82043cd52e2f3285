"""The Kafka clients' repeated complaints, held back, through the worker's own formatter."""

from __future__ import annotations

import io
import logging

from mode.utils.logging import ExtensionFormatter

from streams.logs import MAX_KINDS, Repeats


def test_a_held_back_count_is_formatted_by_the_workers_formatter() -> None:
    # Faust's worker formats with mode's ExtensionFormatter, which wraps arguments that are
    # not a tuple: the summary line once went out as a logging error with a traceback.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ExtensionFormatter(stream=out, fmt="%(levelname)s %(message)s"))
    logger = logging.getLogger("aiokafka.test-repeats")
    logger.addHandler(handler)
    logger.propagate = False
    now = [0.0]
    logger.addFilter(Repeats(every_seconds=30.0, clock=lambda: now[0]))
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    try:
        for t in range(0, 35, 5):
            now[0] = float(t)
            logger.error("Unable connect to node with id %s: %s (100%% busy)", 1, "refused")
    finally:
        logger.removeHandler(handler)
    assert not errors
    assert out.getvalue().splitlines() == [
        "ERROR Unable connect to node with id 1: refused (100% busy)",
        "ERROR Unable connect to node with id 1: refused (100% busy) "
        "(5 more like it in the last 30 s)",
    ]


def test_kinds_remembered_are_bounded() -> None:
    # Messages formatted before logging (each with its own values) are kinds of their own: the
    # filter forgets them all at once past MAX_KINDS instead of growing through an outage.
    now = [0.0]
    repeats = Repeats(every_seconds=30.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, "", 0, msg, (), None)

    assert repeats.filter(record("first"))
    assert not repeats.filter(record("first"))  # held back within 30 s
    for i in range(MAX_KINDS):
        assert repeats.filter(record(f"fetch offset {i} failed"))
    assert repeats.filter(record("first"))  # forgotten with the rest
