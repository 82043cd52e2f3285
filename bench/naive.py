"""The naive pattern, end to end: one River ``HalfSpaceTrees`` per account in a Faust agent.

    .venv/bin/python -m bench.naive BOOTSTRAP TOPIC EVENTS OUT_FILE

What a first streaming detector usually looks like, and what `bench/pipeline.py` compares the
worker with on the same broker and the same backlog: a Faust app whose agent reads the input
topic one message at a time, decodes it with ``orjson``, and scores then learns it with the
account's own ``MinMaxScaler() | HalfSpaceTrees()`` (built on the account's first event). It
writes nothing anywhere. After ``EVENTS`` messages it writes ``{"events": n, "seconds": s,
"skipped": bad lines}`` to ``OUT_FILE`` (timed from the first message) and its parent stops it.
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
    """The per-event features a naive detector would use (`bench.core`'s baseline uses them too).

    Examples
    --------
    >>> x = features({"input_tokens": 100, "output_tokens": 900, "ip": "10.0.0.7",
    ...               "model": "frontier-2", "prompt_fingerprint": "ffff00000000000f"})
    >>> x["ratio"], x["fp_hi"], x["ip_last"], x["model_new"]
    (9.0, 1.0, 7.0, 1.0)
    """
    fp = e.get("prompt_fingerprint") or "0" * 16
    ip = e["ip"]
    return {
        "input_tokens": float(e["input_tokens"]),
        "output_tokens": float(e["output_tokens"]),
        "ratio": e["output_tokens"] / max(e["input_tokens"], 1),
        "cot": e.get("cot_score") or 0.0,
        "error": float((e.get("status") or 200) >= 400),
        "latency": e.get("latency_ms") or 0.0,
        "fp_hi": int(fp[:4], 16) / 65535,
        "fp_lo": int(fp[-4:], 16) / 65535,
        "ip_last": float(ip.rsplit(".", 1)[-1]) if "." in ip else 0.0,
        "v6": float(":" in ip),
        "model_main": float(e["model"] == "frontier-1"),
        "model_new": float(e["model"] == "frontier-2"),
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
    skipped = [0]

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
                skipped[0] += 1  # the backlog's bad lines, counted and reported
            if seen[0] == events:
                elapsed = time.perf_counter() - seen[1]
                result = {"events": events, "seconds": elapsed, "skipped": skipped[0]}
                out.write_bytes(orjson.dumps(result))

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
