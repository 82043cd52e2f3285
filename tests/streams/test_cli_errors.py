"""Errors a person meets at the command line: one line, exit code 2, no credentials, and no
output file emptied by a command that was going to fail anyway. Real chDB and real sockets."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from infra.broker import free_port
from simulator.traffic import SCENARIOS, simulate, write_traffic
from streams.cli import main
from streams.clickhouse import ClickHouseError, Investigation, connect
from streams.settings import Settings, default_clickhouse_url, redact

SECRET = "S3cretPW"
_n = itertools.count()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``distillguard ARGS`` as a separate process, as a person runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-errors") / "events.jsonl"
    traffic = simulate(replace(SCENARIOS["small"], minutes=4, benign_accounts=150))
    write_traffic(traffic, path, None, bad_line_rate=0.0)
    return path


# --- secrets never printed -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://admin:S3cretPW@host:8443", "https://***@host:8443"),
        ("http://admin:S3cretPW@host:8123/db?x=1", "http://***@host:8123/db?x=1"),
        ("http://admin@host:8123", "http://***@host:8123"),
        ("http://admin:p%40ss@S3cretPW@host", "http://***@host"),
        ("https://host:8443/?password=S3cretPW&user=a", "https://host:8443/?password=***&user=a"),
        ("https://host/?user=a&PASSWORD=S3cretPW", "https://host/?user=a&PASSWORD=***"),
        ("https://host/?access_token=S3cretPW#f", "https://host/?access_token=***#f"),
        ("chdb:///var/lib/distillguard?mode=ro", "chdb:///var/lib/distillguard?mode=ro"),
        ("http://host:8123", "http://host:8123"),
    ],
)
def test_redact_hides_userinfo_and_secret_parameters(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET not in redact(url)


def test_redact_works_inside_messages_and_repr() -> None:
    text = f"could not open 'https://admin:{SECRET}@h:8443' (HTTPS://u:{SECRET}@h2)"
    assert redact(text) == "could not open 'https://***@h:8443' (HTTPS://***@h2)"
    settings = Settings(clickhouse_url=f"https://admin:{SECRET}@h:8443", web_token=SECRET)
    assert SECRET not in repr(settings) and "https://***@h:8443" in repr(settings)


def test_migrate_never_prints_the_password_of_an_unreachable_server() -> None:
    url = f"https://admin:{SECRET}@127.0.0.1:{free_port()}"
    for args, env in (
        (["migrate", "--clickhouse", url], None),
        (["migrate"], {"DISTILLGUARD_CLICKHOUSE_URL": url}),
    ):
        done = run_cli(*args, env=env)
        assert done.returncode == 2
        assert SECRET not in done.stdout + done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert "cannot reach ClickHouse at https://***@127.0.0.1:" in done.stderr


def test_migrate_prints_a_redacted_url_when_it_succeeds(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path}/chdb?password={SECRET}"
    done = run_cli("migrate", "--clickhouse", url, "--database", "dg_redacted")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert done.stdout.startswith(
        f"migrate: dg_redacted at chdb://{tmp_path}/chdb?password=***: applied 0001_"
    )


def test_a_wrongly_cased_scheme_is_one_line_without_the_password(capsys) -> None:
    code = main(["migrate", "--clickhouse", f"HTTPS://admin:{SECRET}@host:8443"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.splitlines() == [
        "distillguard migrate: error: ClickHouse URL must start with chdb://, http:// or "
        "https:// (lowercase), got 'HTTPS://***@host:8443'"
    ]


# --- unreachable ClickHouse: one line, exit 2 ------------------------------------------------


@pytest.mark.parametrize("command", ["investigate", "migrate", "score"])
def test_a_refused_clickhouse_url_is_one_line(command: str, events: Path, tmp_path: Path) -> None:
    url = f"http://admin:{SECRET}@127.0.0.1:{free_port()}"
    out = tmp_path / "actions.jsonl"
    args = {
        "investigate": ["investigate", "top", "--clickhouse", url],
        "migrate": ["migrate", "--clickhouse", url],
        "score": ["score", "--input", str(events), "--output", str(out), "--clickhouse", url],
    }[command]
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    port = url.rsplit(":", 1)[1]
    assert lines[0].startswith(
        f"distillguard {command}: error: cannot reach ClickHouse at http://***@127.0.0.1:{port}: "
    )
    assert "Connection refused" in lines[0]
    assert lines[0].endswith("; check --clickhouse / DISTILLGUARD_CLICKHOUSE_URL")
    assert not out.exists()  # score opened no output before ClickHouse was known to work


def test_a_chdb_path_on_a_read_only_filesystem_is_one_line_that_says_so(tmp_path: Path) -> None:
    # The engine's exception says only "Error initializing EmbeddedServer", as for a path held
    # by another process; what it wrote to stderr says why (a disk remounted read-only after an
    # error, a volume mounted read-only).
    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if os.geteuid() != 0 or mounted.returncode != 0:
        pytest.skip("mounting a filesystem needs root (and a machine that lets it)")
    try:
        url = f"chdb://{mount}/chdb"
        assert run_cli("migrate", "--clickhouse", url).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        done = run_cli("migrate", "--clickhouse", url)
        assert done.returncode == 2
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert f"cannot open the chDB path {mount}/chdb: Read-only file system; " in lines[0]
        assert "in use by another process" not in lines[0]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_chdb_path_held_by_another_process_is_one_line(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path}/held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from streams.clickhouse import connect; "
            f"c = connect({url!r}); c.command('SELECT 1'); print('held', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for args in (["migrate", "--clickhouse", url], ["investigate", "top", "--clickhouse", url]):
            done = run_cli(*args)
            assert done.returncode == 2
            lines = done.stderr.splitlines()
            assert len(lines) == 1, done.stderr
            assert f"the chDB path {tmp_path}/held is in use by another process" in lines[0]
            assert "EmbeddedServer" not in lines[0]
            assert "use the worker's web view" in lines[0]  # where to look while a worker runs
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


# --- score: outputs survive a failing input, the environment's ClickHouse is used -------------


def test_score_does_not_empty_existing_outputs_when_the_input_is_missing(tmp_path, capsys) -> None:
    out, dead, scores = tmp_path / "a.jsonl", tmp_path / "d.jsonl", tmp_path / "w.jsonl.gz"
    for f in (out, dead, scores):
        f.write_bytes(b"precious\n")
    code = main(
        [
            "score",
            "--input",
            str(tmp_path / "typo.jsonl"),
            "--output",
            str(out),
            "--dead-letter",
            str(dead),
            "--scores",
            str(scores),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "No such file" in err
    assert all(f.read_bytes() == b"precious\n" for f in (out, dead, scores))
    fresh = tmp_path / "fresh.jsonl"
    assert main(["score", "--input", str(tmp_path), "--output", str(fresh)]) == 2  # a directory
    assert not fresh.exists()


@pytest.mark.clickhouse
def test_score_writes_to_the_clickhouse_of_the_environment(
    chdb_url, events, tmp_path, monkeypatch, capsys
) -> None:
    database = f"dg_env_score_{next(_n)}"
    monkeypatch.setenv("DISTILLGUARD_CLICKHOUSE_URL", chdb_url)
    monkeypatch.setenv("DISTILLGUARD_CLICKHOUSE_DATABASE", database)
    out = tmp_path / "a.jsonl"
    assert main(["score", "--input", str(events), "--output", str(out)]) == 0
    assert f"also writing to ClickHouse at {chdb_url}, database {database}" in (
        capsys.readouterr().err
    )
    client = connect(chdb_url)
    rows = client.query(f"SELECT count() FROM {database}.entity_scores").result_rows[0][0]
    assert rows > 0


def test_score_without_a_clickhouse_setting_writes_to_no_clickhouse(
    events, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("DISTILLGUARD_CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["score", "--input", str(events), "--output", str(tmp_path / "a.jsonl")]) == 0
    assert "ClickHouse" not in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # the embedded default was not opened


# --- investigations are bounded --------------------------------------------------------------


@pytest.mark.clickhouse
def test_investigation_queries_carry_a_time_limit(chdb_url) -> None:
    inv = Investigation(connect(chdb_url), "default")
    assert inv._rows("SELECT getSetting('max_execution_time') AS t") == [{"t": 10}]
    slow = Investigation(connect(chdb_url), "default", max_execution_time=0.3)
    with pytest.raises(ClickHouseError, match="TIMEOUT_EXCEEDED"):
        slow._rows("SELECT count() FROM numbers(100000000000) WHERE NOT ignore(sipHash64(number))")


@pytest.mark.parametrize(
    "args",
    [
        ["--since-minutes", "abc"],
        ["--since-minutes", "0"],
        ["--since-minutes", "10081"],
        ["--limit", "0"],
        ["--limit", "1001"],
    ],
)
def test_investigate_refuses_out_of_range_bounds(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["investigate", "top", *args])
    assert exc.value.code == 2
    assert "investigate: error: argument" in capsys.readouterr().err


# --- the default store is per user -----------------------------------------------------------


def test_the_default_store_is_in_the_users_data_directory() -> None:
    assert Settings.from_env({"XDG_DATA_HOME": "/data/me"}).clickhouse_url == (
        "chdb:///data/me/distillguard/chdb"
    )
    assert Settings.from_env({"HOME": "/home/me"}).clickhouse_url == (
        "chdb:///home/me/.local/share/distillguard/chdb"
    )
    assert "/var/tmp" not in Settings().clickhouse_url
    assert Settings().clickhouse_url == default_clickhouse_url()
    given = {"DISTILLGUARD_CLICKHOUSE_URL": "http://h:8123", "XDG_DATA_HOME": "/d"}
    assert Settings.from_env(given).clickhouse_url == "http://h:8123"


@pytest.mark.clickhouse
def test_migrate_without_settings_uses_the_per_user_store(tmp_path: Path) -> None:
    done = run_cli("migrate", env={"XDG_DATA_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    store = tmp_path / "distillguard" / "chdb"
    assert done.stdout.startswith(f"migrate: distillguard at chdb://{store}: applied 0001_")
    assert store.is_dir()
