"""The one settings object: ``DISTILLGUARD_*`` environment variables, overridable per command.

Nothing else in the project reads ``os.environ``. Without any settings everything runs on the
embedded defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from infra.kafka_auth import KafkaAuth
from models.detector import DetectorConfig
from models.policy import PolicyConfig
from schemas.topics import DEAD_LETTERS, ENFORCEMENT, USAGE_EVENTS, Topics
from streams.processors import MAX_PAST_SKEW_MS

__all__ = ["Settings", "default_clickhouse_url", "is_loopback", "redact"]

PREFIX = "DISTILLGUARD_"

# ``scheme://userinfo@``: everything between ``://`` and the last ``@`` before the first ``/``.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/]*)@")
# ``?password=...``, ``&access_token=...`` and the like: the value up to the next separator.
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;][\w.-]*(?:password|passwd|pwd|token|secret|api_?key|access_?key)[\w.-]*=)"
    r"[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact(url: str) -> str:
    """``url`` (or any text holding URLs) with credentials replaced by ``***``: the
    ``user:password@`` of each URL and the value of every password/token/secret parameter.

    Use it wherever a URL is printed, logged, or put in an error message or a response.

    Examples
    --------
    >>> redact("https://admin:S3cretPW@host:8443/db")
    'https://***@host:8443/db'
    >>> redact("HTTPS://admin:p@ss@host?user=x&password=S3cret&Token=t1#x")
    'HTTPS://***@host?user=x&password=***&Token=***#x'
    >>> redact("chdb:///var/lib/chdb")
    'chdb:///var/lib/chdb'
    >>> redact("failed: 'http://u:pw@h:8123' and http://h2:8123/?access_token=abc")
    "failed: 'http://***@h:8123' and http://h2:8123/?access_token=***"
    """
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", url)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}***", text)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: ``localhost``, 127.0.0.0/8, ``::1``.

    Examples
    --------
    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.1.2.3", "h")]
    [True, True, True, False, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def default_clickhouse_url(env: Mapping[str, str] | None = None) -> str:
    """The embedded store of this user: ``$XDG_DATA_HOME/distillguard/chdb``, else
    ``~/.local/share/distillguard/chdb`` (never a directory shared with other users).

    Examples
    --------
    >>> default_clickhouse_url({"XDG_DATA_HOME": "/data/me"})
    'chdb:///data/me/distillguard/chdb'
    >>> default_clickhouse_url({"HOME": "/home/me", "XDG_DATA_HOME": "relative/ignored"})
    'chdb:///home/me/.local/share/distillguard/chdb'
    """
    source = os.environ if env is None else env
    xdg = source.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec ignores a relative value
        base = Path(xdg)
    else:
        base = Path(source.get("HOME") or Path.home()) / ".local" / "share"
    return f"chdb://{base / 'distillguard' / 'chdb'}"


@dataclass(frozen=True)
class Settings:
    """Runtime settings; each field ``x`` is read from ``DISTILLGUARD_X``."""

    kafka_bootstrap: str = ""  # empty: start the embedded broker
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (infra.kafka_auth), for every Kafka client
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""  # PLAIN (default with SASL), SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""  # never printed
    kafka_ssl_cafile: str = ""  # CA bundle verifying the brokers (default: the system's)
    kafka_ssl_certfile: str = ""  # client certificate (mutual TLS)
    kafka_ssl_keyfile: str = ""
    # The topics (the contract's names by default): the one the gateway writes, the dead letters,
    # the enforcement events, and the prefix of the worker's internal topics.
    topic_usage_events: str = USAGE_EVENTS
    topic_dead_letters: str = DEAD_LETTERS
    topic_enforcement: str = ENFORCEMENT
    internal_topic_prefix: str = "distillguard."
    clickhouse_url: str = field(default_factory=default_clickhouse_url)
    clickhouse_database: str = "distillguard"
    window_seconds: int = 60
    allowed_lateness_seconds: int = 10
    seed: int = 42
    flag_budget: float = 1e-3
    # Five windows in a row within this budget flag too (`models.policy`: sustained near the line).
    sustained_budget: float = 5e-3
    throttle_budget: float = 2e-4
    suspend_budget: float = 5e-5
    min_requests: int = 3
    # The cot_score at which the upstream classifier means "asks for step-by-step reasoning".
    reasoning_verdict: float = 0.5
    allowlist_file: str = ""
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_token: str = ""  # when set, every web route but /health needs "Bearer <token>"
    checkpoint_seconds: float = 10.0
    # Freed heap memory handed back to the system at most this often; negative: never.
    memory_return_seconds: float = 10.0
    idle_flush_seconds: float = 60.0
    internal_partitions: int = 8
    # Replicas of the internal topics the worker creates (-1: the cluster's
    # default.replication.factor).
    topic_replication_factor: int = -1
    worker_name: str = "distillguard"
    max_message_bytes: int = 1024 * 1024  # larger input messages are dead-lettered by reference
    max_future_skew_seconds: float = 300.0  # events further ahead of the clock: dead letters; 0 off
    # events further behind the clock: dead letters (by default, a day less than the 90 days
    # ClickHouse keeps scores); 0 off
    max_past_skew_seconds: float = MAX_PAST_SKEW_MS / 1000
    output_give_up_seconds: float = 300.0  # retrying a failed output this long: the worker exits

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
        if "clickhouse_url" not in values:
            values["clickhouse_url"] = default_clickhouse_url(source)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def given(cls, env: Mapping[str, str] | None = None) -> frozenset[str]:
        """The fields set (non-empty) in the environment, as opposed to left at their defaults.

        Examples
        --------
        >>> sorted(Settings.given({"DISTILLGUARD_SEED": "1", "DISTILLGUARD_WEB_TOKEN": ""}))
        ['seed']
        """
        source = os.environ if env is None else env
        return frozenset(f.name for f in fields(cls) if source.get(PREFIX + f.name.upper()))

    def __repr__(self) -> str:
        """Every field, with the ClickHouse URL redacted and the web token hidden."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["clickhouse_url"] = redact(self.clickhouse_url)
        shown["web_token"] = "***" if self.web_token else ""
        shown["kafka_sasl_password"] = "***" if self.kafka_sasl_password else ""
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

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

    def topics(self) -> Topics:
        """The topic names of this deployment (raises a one-line ValueError for a bad name).

        Examples
        --------
        >>> Settings.from_env({"DISTILLGUARD_TOPIC_USAGE_EVENTS": "gw.usage"}).topics().usage
        'gw.usage'
        """
        return Topics(
            self.topic_usage_events,
            self.topic_dead_letters,
            self.topic_enforcement,
            self.internal_topic_prefix,
        )

    def kafka_auth(self) -> KafkaAuth:
        """How every Kafka client authenticates and encrypts (raises a one-line ValueError).

        Examples
        --------
        >>> env = {"DISTILLGUARD_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        ...        "DISTILLGUARD_KAFKA_SASL_USERNAME": "u", "DISTILLGUARD_KAFKA_SASL_PASSWORD": "p"}
        >>> Settings.from_env(env).kafka_auth().sasl_mechanism
        'PLAIN'
        """
        return KafkaAuth(
            self.kafka_security_protocol,
            self.kafka_sasl_mechanism,
            self.kafka_sasl_username,
            self.kafka_sasl_password,
            self.kafka_ssl_cafile,
            self.kafka_ssl_certfile,
            self.kafka_ssl_keyfile,
        )

    def detector_notes(self) -> list[str]:
        """Settings that are valid but do less than they seem to, one line each, with the fix.

        >>> Settings(flag_budget=0.01).detector_notes()[0].split(":")[0]
        'DISTILLGUARD_SUSTAINED_BUDGET (0.005) is not over DISTILLGUARD_FLAG_BUDGET (0.01)'
        >>> off = Settings(flag_budget=0.01, sustained_budget=0)
        >>> Settings().detector_notes(), off.detector_notes()
        ([], [])
        """
        notes = []
        if 0.0 < self.sustained_budget <= self.flag_budget:
            notes.append(
                f"DISTILLGUARD_SUSTAINED_BUDGET ({self.sustained_budget:g}) is not over "
                f"DISTILLGUARD_FLAG_BUDGET ({self.flag_budget:g}): no account is flagged for "
                "staying near the flag line, since the flag itself comes first; set it above "
                "the flag budget (the defaults: five times it), or to 0 to turn the rule off"
            )
        return notes

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            window_ms=self.window_seconds * 1000,
            allowed_lateness_ms=self.allowed_lateness_seconds * 1000,
            seed=self.seed,
            reasoning_verdict=self.reasoning_verdict,
            policy=PolicyConfig(
                flag_budget=self.flag_budget,
                sustained_budget=self.sustained_budget,
                throttle_budget=self.throttle_budget,
                suspend_budget=self.suspend_budget,
                min_requests=self.min_requests,
                allowlist=self.allowlist(),
            ),
        )
