"""The naive pattern, end to end: one River ``HalfSpaceTrees`` per account in a Faust agent.

    .venv/bin/python -m bench.naive BOOTSTRAP TOPIC EVENTS OUT_FILE

What a first streaming detector usually looks like, and what `bench/pipeline.py` compares the
worker with on the same broker and the same backlog: a Faust app whose agent reads the input
topic one message at a time, decodes it with ``orjson``, and scores then learns it with the
account's own ``MinMaxScaler() | HalfSpaceTrees()`` (built on the account's first event). It
writes nothing anywhere. After ``EVENTS`` messages it writes ``{"events": n, "seconds": s}`` to
``OUT_FILE`` (timed from the first message) and its parent stops it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from river import anomaly, compose, preprocessing


def features(e: dict[str, Any]) -> dict[str, float]:
    """The per-event features a naive detector would use (those of `bench.core`'s baseline)."""
    fp = e.get("prompt_fingerprint") or "0" * 16
    return {
        "input_tokens": float(e["input_tokens"]),
        "output_tokens": float(e["output_tokens"]),
        "ratio": e["output_tokens"] / max(e["input_tokens"], 1),
        "cot": e.get("cot_score") or 0.0,
        "error": float((e.get("status") or 200) >= 400),
        "latency": e.get("latency_ms") or 0.0,
        "fp_hi": int(fp[:4], 16) / 65535,
        "fp_lo": int(fp[-4:], 16) / 65535,
    }


def main(bootstrap: str, topic: str, events: int, out: Path) -> None:
    app = faust.App(
        "distillguard-naive-baseline",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_allow_declare=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
    )
    source = app.topic(topic, value_type=bytes, value_serializer="raw", internal=False)
    models: dict[str, compose.Pipeline] = {}
    seen = [0, 0.0]

    @app.agent(source)
    async def score(stream: Any) -> None:
        async for raw in stream:
            if seen[0] == 0:
                seen[1] = time.perf_counter()
            seen[0] += 1
            try:
                e = orjson.loads(raw)
                x = features(e)
                model = models.get(e["account_id"])
                if model is None:
                    model = models[e["account_id"]] = (
                        preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()
                    )
                model.score_one(x)
                model.learn_one(x)
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # the backlog's bad lines: skipped, as a naive detector would
            if seen[0] == events:
                elapsed = time.perf_counter() - seen[1]
                out.write_bytes(orjson.dumps({"events": events, "seconds": elapsed}))

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
