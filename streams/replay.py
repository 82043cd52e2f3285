"""``distillguard score``: replay a JSONL(.gz) file of events through the detector, no Kafka.

Same validation, same `Detector`, same enforcement JSON as the streaming worker. Events are
replayed in event-time order (a stable sort, so ties keep file order), which makes the output
depend only on the input and the settings.
"""

from __future__ import annotations

import gzip
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from tqdm import tqdm

from models.detector import Detector, DetectorConfig, DetectorOutput
from models.events import UsageEvent
from schemas.dead_letters import DeadLetter
from schemas.validation import Rejection, parse_event
from streams.clickhouse import ClickHouseSink

__all__ = ["ReplaySummary", "open_lines", "open_output", "replay"]

BATCH = 20_000


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    rejected: int = 0
    rejected_by_field: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late: int = 0
    windows_scored: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self) -> str:
        acts = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())) or "none"
        rate = self.events / self.seconds if self.seconds else 0.0
        return (
            f"score: {self.lines} lines, {self.events} events, {self.rejected} rejected "
            f"(dead-lettered), {self.duplicates} duplicates, {self.late} late; "
            f"{self.windows_scored} entity windows scored; actions: {acts}; "
            f"{self.seconds:.1f} s ({rate:,.0f} events/s)"
        )


def open_output(path: Path) -> IO[bytes]:
    """A binary file for writing, gzip-compressed if the name ends in .gz."""
    if path.suffix == ".gz":
        return gzip.open(path, "wb", compresslevel=3)  # type: ignore[return-value]
    return open(path, "wb")


def open_lines(path: Path) -> Iterator[bytes]:
    """Lines of a JSONL file, gzip-compressed if it ends in .gz; ``-`` reads standard input."""
    if str(path) == "-":
        yield from sys.stdin.buffer
        return
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        yield from f


def replay(
    input_path: Path,
    output: IO[bytes],
    config: DetectorConfig,
    dead_letter: IO[bytes] | None = None,
    progress: bool | None = None,
    scores: IO[bytes] | None = None,
    sink: ClickHouseSink | None = None,
) -> ReplaySummary:
    """Score every event of ``input_path``; write enforcement events (JSONL) to ``output``.

    With ``scores``, every scored entity window is written there too (JSONL, the shape of the
    ``entity_scores`` table). With ``sink``, scores, actions, links and dead letters are also
    written to ClickHouse, one insert per table per batch.
    """
    dead_rows: list[DeadLetter] = []
    source = str(input_path)
    started = time.perf_counter()
    summary = ReplaySummary()
    show = sys.stderr.isatty() if progress is None else progress
    events: list[UsageEvent] = []
    for line_no, raw in enumerate(
        tqdm(open_lines(input_path), desc="reading", unit=" lines", disable=not show), start=1
    ):
        summary.lines += 1
        text = raw.strip()
        if not text:
            continue
        parsed = parse_event(text)
        if isinstance(parsed, Rejection):
            summary.rejected += 1
            summary.rejected_by_field[parsed.field] += 1
            if sink is not None:
                dead_rows.append(
                    DeadLetter(int(time.time() * 1000), source, -1, line_no, parsed, bytes(text))
                )
            if dead_letter is not None:
                dead_letter.write(
                    orjson.dumps(
                        {
                            "line": line_no,
                            "field": parsed.field,
                            "reason": str(parsed),
                            "raw": text.decode("utf-8", "replace"),
                        }
                    )
                    + b"\n"
                )
            continue
        events.append(parsed)

    events.sort(key=lambda e: e.ts_ms)
    summary.events = len(events)
    det = Detector(config)
    with tqdm(total=len(events), desc="scoring", unit=" events", disable=not show) as bar:
        for i in range(0, len(events), BATCH):
            batch = events[i : i + BATCH]
            _emit(det.process(batch), output, summary, scores, det.version, sink)
            bar.update(len(batch))
    _emit(det.flush(), output, summary, scores, det.version, sink)
    if sink is not None:
        sink.write_dead_letters(dead_rows)
    summary.duplicates = det.stats.duplicates
    summary.late = det.stats.late
    summary.seconds = time.perf_counter() - started
    return summary


def _emit(
    out: DetectorOutput,
    output: IO[bytes],
    summary: ReplaySummary,
    scores: IO[bytes] | None,
    version: str,
    sink: ClickHouseSink | None = None,
) -> None:
    if sink is not None:
        sink.write(out, version=version)
    for scored in out.scored:
        summary.windows_scored += len(scored)
        if scores is not None:
            scores.writelines(orjson.dumps(row) + b"\n" for row in scored.rows(version))
    for action in out.actions:
        summary.actions[f"{action.entity_kind} {action.action}"] += 1
        output.write(action.to_json() + b"\n")
