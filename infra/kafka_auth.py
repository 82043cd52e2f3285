"""How every Kafka client of the project authenticates and encrypts: SASL (PLAIN, SCRAM) and TLS.

One `KafkaAuth` is built from the settings (``DISTILLGUARD_KAFKA_SECURITY_PROTOCOL`` and the
``DISTILLGUARD_KAFKA_SASL_*`` / ``DISTILLGUARD_KAFKA_SSL_*`` variables) and handed to every client
the project opens: the worker's aiokafka consumers and producer, kafka-python in ``simulate
--topic`` and topic creation, and the Faust app. aiokafka and kafka-python take the same keyword
arguments (`client_kwargs`). The password never appears in a repr, a log line or an error.

Examples
--------
>>> KafkaAuth().client_kwargs()
{}
>>> auth = KafkaAuth("SASL_PLAINTEXT", "SCRAM-SHA-512", "svc-distillguard", "S3cret")
>>> auth
KafkaAuth(security_protocol='SASL_PLAINTEXT', sasl_mechanism='SCRAM-SHA-512', username='svc-distillguard', password='***', cafile='', certfile='', keyfile='')
>>> sorted(auth.client_kwargs())
['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
>>> KafkaAuth("SASL_SSL", "PLAIN", "u")
Traceback (most recent call last):
...
ValueError: DISTILLGUARD_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs DISTILLGUARD_KAFKA_SASL_USERNAME and DISTILLGUARD_KAFKA_SASL_PASSWORD
"""  # noqa: E501

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.cluster import collect_hosts

__all__ = ["MECHANISMS", "PROTOCOLS", "KafkaAuth", "check_reachable"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_VAR = "DISTILLGUARD_KAFKA_"


@dataclass(frozen=True)
class KafkaAuth:
    """Security settings shared by every Kafka client (see the module docstring)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    username: str = ""
    password: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        object.__setattr__(self, "security_protocol", protocol)
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"{_VAR}SECURITY_PROTOCOL={self.security_protocol} is not one of "
                f"{', '.join(PROTOCOLS)}"
            )
        if self.sasl:
            mechanism = (self.sasl_mechanism or "PLAIN").upper()
            object.__setattr__(self, "sasl_mechanism", mechanism)
            if mechanism not in MECHANISMS:
                raise ValueError(
                    f"{_VAR}SASL_MECHANISM={self.sasl_mechanism} is not one of "
                    f"{', '.join(MECHANISMS)}"
                )
            if not (self.username and self.password):
                raise ValueError(
                    f"{_VAR}SECURITY_PROTOCOL={protocol} needs {_VAR}SASL_USERNAME and "
                    f"{_VAR}SASL_PASSWORD"
                )
        elif self.sasl_mechanism or self.username or self.password:
            raise ValueError(
                f"{_VAR}SASL_* is set but {_VAR}SECURITY_PROTOCOL={protocol} does not use SASL: "
                "set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
        if (self.certfile or self.keyfile or self.cafile) and not self.tls:
            raise ValueError(
                f"{_VAR}SSL_* is set but {_VAR}SECURITY_PROTOCOL={protocol} does not use TLS: "
                "set it to SSL or SASL_SSL"
            )
        for name in ("cafile", "certfile", "keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{_VAR}SSL_{name.upper()}={path}: no such file")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in self.__dataclass_fields__}
        shown["password"] = "***" if self.password else ""
        return f"KafkaAuth({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context verifying the brokers (the system's CAs, or ``cafile``), with a client
        certificate when ``certfile`` is set; None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.cafile or None)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile or None)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an aiokafka or kafka-python client ({} for PLAINTEXT)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            out |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        return out


def check_reachable(bootstrap: str, auth: KafkaAuth, timeout_s: float = 10.0) -> None:
    """Raise an `OSError` whose one line names the cause and the setting to fix, if no bootstrap
    server can be reached: connected to and, with TLS, shaken hands with (the broker's
    certificate verified, ours accepted). The Kafka clients retry such a failure for 30 s and
    then report only "Unable to bootstrap". The servers are read as the clients read them
    (``host:port``, ``[v6]:port``, a ``PROTOCOL://`` prefix, 9092 by default) and checked in
    turn within one ``timeout_s``, each given an equal share of what is left (at least a
    second), so one silent server does not use up the time of the healthy ones after it. SASL
    credentials are the clients' to check.

    >>> check_reachable(f"127.0.0.1:{_closed_port()}", KafkaAuth())
    Traceback (most recent call last):
    ...
    OSError: cannot reach Kafka: 127.0.0.1:...: connection refused: is Kafka running there? (DISTILLGUARD_KAFKA_BOOTSTRAP)
    """  # noqa: E501
    deadline = time.monotonic() + timeout_s
    problems: dict[str, list[str]] = {}
    hosts = collect_hosts(bootstrap, randomize=False)
    for i, (host, port, _) in enumerate(hosts):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        problem = _problem(host, port, auth, max(left / (len(hosts) - i), min(left, 1.0)))
        if problem is None:
            return
        server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        problems.setdefault(problem, []).append(server)
    said = [f"{', '.join(servers)}: {problem}" for problem, servers in problems.items()]
    raise OSError("cannot reach Kafka: " + ("; ".join(said) or f"no time left ({_VAR}BOOTSTRAP)"))


def _problem(host: str, port: int, auth: KafkaAuth, timeout_s: float) -> str | None:
    """What keeps us from talking to ``host:port`` (None: nothing), within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s

    def left(most: float = 2.0) -> float:  # for the follow-up probes: at most 2 s each
        return max(0.05, min(most, deadline - time.monotonic()))

    try:
        sock = socket.create_connection((host, port), timeout_s)
    except ConnectionRefusedError:
        return f"connection refused: is Kafka running there? ({_VAR}BOOTSTRAP)"
    except OSError as exc:
        return f"{exc.strerror or exc} ({_VAR}BOOTSTRAP)"
    with sock:
        context = auth.ssl_context()
        if context is None:
            return _plaintext_problem(sock, left())
        plaintext = (
            f"if it is not a TLS listener, set {_VAR}SECURITY_PROTOCOL to PLAINTEXT or "
            "SASL_PLAINTEXT, or point the bootstrap at its TLS listener"
        )
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                # TLS 1.3 reports a refused client certificate after the handshake: a broker
                # waiting for our first request sends nothing, a refusal arrives (or a close).
                tls.settimeout(left())
                with contextlib.suppress(TimeoutError):
                    if tls.recv(1) == b"":
                        return f"it closed the connection after the TLS handshake: {_CLIENT_CERT}"
            return None
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the broker's certificate is not trusted ({exc.verify_message}): set "
                f"{_VAR}SSL_CAFILE to the CA that issued it"
            )
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if any(k in reason for k in ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE")):
                return f"TLS handshake refused ({reason}): {_CLIENT_CERT}"
            if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
                return f"TLS handshake failed ({reason}): {plaintext}"
            if "EOF" in reason:
                return _dropped(host, port, context, left(), reason, plaintext)
            if "HANDSHAKE_FAILURE" in reason and not auth.certfile:  # an alert: TLS spoken
                return (
                    f"TLS handshake refused ({reason}): if the broker wants a client "
                    f"certificate, set {_VAR}SSL_CERTFILE and _KEYFILE; otherwise check the "
                    f"{_VAR}SSL_* settings"
                )
            return f"TLS handshake failed ({reason}): check the {_VAR}SSL_* settings"
        except TimeoutError:
            return f"no answer to a TLS handshake within {timeout_s:.0f} s: {plaintext}"
        except OSError as exc:  # closed in the middle of the handshake
            reason = exc.strerror or str(exc)
            return _dropped(host, port, context, left(), reason, plaintext)


def _dropped(
    host: str, port: int, context: ssl.SSLContext, timeout_s: float, reason: str, plaintext: str
) -> str:
    """A handshake ended by a close: a TLS listener that answered our hello and then refused us
    (under TLS 1.2 a missing or unknown client certificate may end so), or no TLS listener at
    all. Said apart by sending a hello again, within ``timeout_s``, and reading the first bytes."""
    if _answers_tls(host, port, context, timeout_s):
        return f"TLS handshake refused ({reason}): {_CLIENT_CERT}"
    return f"TLS handshake failed ({reason}): {plaintext}"


def _answers_tls(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> bool:
    """Whether ``host:port`` answers a TLS hello with a TLS handshake record (type 22, 3.x)."""
    hello = ssl.MemoryBIO()
    probe = context.wrap_bio(ssl.MemoryBIO(), hello, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):
        probe.do_handshake()  # writes the client hello, then wants the server's answer
    try:
        with socket.create_connection((host, port), timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(hello.read())
            head = sock.recv(5)
    except OSError:
        return False
    return head[:1] == b"\x16" and head[1:2] in (b"\x03", b"")


# ApiVersions v0 (key 18), correlation id 1: the first request every client sends, answered
# before any SASL exchange. Kafka answers with a 4-byte size and our correlation id.
_CLIENT_ID = b"distillguard-preflight"
_API_VERSIONS = struct.pack(">ihhih", 10 + len(_CLIENT_ID), 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID


def _plaintext_problem(sock: socket.socket, timeout_s: float) -> str | None:
    """Whether a listener we speak plaintext to turns out to be a TLS one: it answers a Kafka
    request with a TLS alert record (content type 21, version 3.x) or closes the connection
    without a word. Silence within ``timeout_s`` is left to the clients."""
    tls = (
        f"set {_VAR}SECURITY_PROTOCOL to SSL (or SASL_SSL) and {_VAR}SSL_CAFILE to its CA, "
        "or point the bootstrap at its plaintext listener"
    )
    sock.settimeout(timeout_s)
    try:
        sock.sendall(_API_VERSIONS)
        head = sock.recv(8)
    except TimeoutError:
        return None
    except OSError as exc:  # reset: refused mid-request
        return f"it dropped a Kafka request ({exc.strerror or exc}): if it is a TLS listener, {tls}"
    if head[:1] == b"\x15" and head[1:2] == b"\x03":
        return f"it answered a Kafka request in TLS: {tls}"
    if head == b"":
        return f"it closed the connection on a Kafka request: if it is a TLS listener, {tls}"
    return None


_CLIENT_CERT = f"it wants a client certificate its CA issued: set {_VAR}SSL_CERTFILE and _KEYFILE"


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for the example above)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
