"""A benchmark's headline figures as JSON, for `bench.pipeline --all` to gather into one table.

Every benchmark the streaming engine's targets name takes ``--summary PATH`` and, when given,
writes its headline figures there once it has printed them.

    >>> import argparse, json, tempfile
    >>> from pathlib import Path
    >>> ap = argparse.ArgumentParser()
    >>> add_argument(ap)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     args = ap.parse_args(["--summary", f"{tmp}/core.json"])
    ...     write(args.summary, core=108_785.2)
    ...     json.loads(Path(tmp, "core.json").read_text())
    {'core': 108785.2}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

__all__ = ["add_argument", "write"]


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--summary",
        type=Path,
        help="also write the headline figures to this JSON file (bench.pipeline --all reads it)",
    )


def write(path: Path | None, **figures: Any) -> None:
    """Write ``figures`` as a JSON object to ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        path.write_bytes(orjson.dumps(figures))
