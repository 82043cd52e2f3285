"""The one settings object: ``DISTILLGUARD_*`` environment variables, overridable per command.

Nothing else in the project reads ``os.environ``. Without any settings everything runs on the
embedded defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from models.detector import DetectorConfig
from models.policy import PolicyConfig

__all__ = ["Settings"]

PREFIX = "DISTILLGUARD_"


@dataclass(frozen=True)
class Settings:
    """Runtime settings; each field ``x`` is read from ``DISTILLGUARD_X``."""

    kafka_bootstrap: str = ""  # empty: start the embedded broker
    clickhouse_url: str = "chdb:///var/tmp/distillguard-chdb"
    clickhouse_database: str = "distillguard"
    window_seconds: int = 60
    allowed_lateness_seconds: int = 10
    seed: int = 42
    flag_budget: float = 1e-3
    throttle_budget: float = 2e-4
    suspend_budget: float = 5e-5
    min_requests: int = 3
    allowlist_file: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    checkpoint_seconds: float = 10.0
    idle_flush_seconds: float = 60.0
    internal_partitions: int = 8
    worker_name: str = "distillguard"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment (or a mapping), converting to each field's type.

        Examples
        --------
        >>> Settings.from_env({"DISTILLGUARD_WINDOW_SECONDS": "30"}).window_seconds
        30
        """
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = source.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{PREFIX}{f.name.upper()}={raw!r} is not a {kind.__name__}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> Settings:
        """Command-line options win over the environment; ``None`` means not given."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]

    def allowlist(self) -> frozenset[str]:
        """Entity ids (account ids or CIDR blocks), one per line; ``#`` starts a comment."""
        if not self.allowlist_file:
            return frozenset()
        entries = set()
        for line in Path(self.allowlist_file).read_text().splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.add(entry)
        return frozenset(entries)

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            window_ms=self.window_seconds * 1000,
            allowed_lateness_ms=self.allowed_lateness_seconds * 1000,
            seed=self.seed,
            policy=PolicyConfig(
                flag_budget=self.flag_budget,
                throttle_budget=self.throttle_budget,
                suspend_budget=self.suspend_budget,
                min_requests=self.min_requests,
                allowlist=self.allowlist(),
            ),
        )
