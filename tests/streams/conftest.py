"""What the streaming tests share: a real broker (Tansu) with the contract's topics, a database of
its own in the real ClickHouse engine (chDB), and the helpers that read them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.broker import EmbeddedBroker, ensure_topics
from schemas.topics import default_topics
from schemas.validation import Rejection, parse_event
from streams.clickhouse import connect, migrate

PARTITIONS = 4
DAY_MS = 86_400_000
Messages = list[tuple[bytes, bytes]]
_db = itertools.count()


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of its own per test, so topics start empty."""
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, default_topics(PARTITIONS))
        yield b


@pytest.fixture
def db(chdb_url: str, request: pytest.FixtureRequest) -> tuple[Any, str]:
    """A migrated database of its own per test: (client, database name)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"dg_{module}_{next(_db)}"
    client = connect(chdb_url)
    migrate(client, name)
    return client, name


def valid(messages: Messages) -> int:
    """How many of the messages are valid events."""
    return sum(not isinstance(parse_event(v), Rejection) for _, v in messages)


def query(db: tuple[Any, str], sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` with ``DB`` standing for the test's database."""
    client, name = db
    rows: list[tuple[Any, ...]] = client.query(sql.replace("DB", name)).result_rows
    return rows


async def wait_until(cond: Any, timeout: float = 150.0, engines: Any = ()) -> None:
    """Poll ``cond`` until true; raise what a failed engine raised, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while not cond():
        for e in engines:
            if e.failed():
                raise e.failed()
        if time.monotonic() > deadline:
            raise TimeoutError("the pipeline did not get there in time")
        await asyncio.sleep(0.1)
