"""The Grafana dashboard (infra/grafana) against a real store: every ClickHouse panel's SQL,
expanded the way Grafana and the ClickHouse plugin expand it, runs on chDB filled by `score`
from a simulated scenario; every Prometheus expression names metrics the worker exports; the
provisioning files agree with the dashboard and with infra/docker-compose.yml."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from unittest.mock import MagicMock
from urllib.parse import quote

import pytest

from simulator.traffic import SimulatedTraffic, write_traffic
from streams.app import prometheus
from streams.cli import main
from streams.clickhouse import connect
from streams.engine import Engine
from streams.metrics import Metrics, SinkStats

pytestmark = pytest.mark.clickhouse

INFRA = Path(__file__).resolve().parents[2] / "infra"
GRAFANA = INFRA / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "distillguard.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
PROMETHEUS_YML = GRAFANA / "prometheus" / "prometheus.yml"
COMPOSE = INFRA / "docker-compose.yml"
DB = "dg_grafana"


# ------------------------------------------------------------------ the dashboard


def _dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD.read_text()))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # rows (collapsed or not)


def _targets(plugin: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of the data source type ``plugin``."""
    out = []
    for p in _panels(_dashboard()["panels"]):
        for t in p.get("targets", []):
            if (t.get("datasource") or p["datasource"])["type"] == plugin:
                out.append((p["title"], t))
    return out


def _variable(name: str) -> dict[str, Any]:
    return next(v for v in _dashboard()["templating"]["list"] if v["name"] == name)


# ------------------------------------------------------------------ Grafana's expansion


def expand(sql: str, frm: datetime, to: datetime, variables: dict[str, str]) -> str:
    """What reaches ClickHouse: Grafana's template variables (``$v``, ``${v}``,
    ``${v:percentencode}``), then the ClickHouse plugin's macros as its backend writes them
    (pkg/macros/macros.go): ``$__timeFilter(c)``, ``$__timeInterval(c)``, ``$__fromTime``,
    ``$__toTime``, ``$__interval_s``. Anything else left with a ``$`` is an error."""
    # Grafana's interval: range / max data points, but never under the panels' 1m minimum
    interval = max(60, int((to - frm).total_seconds()) // 1000)

    def var(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        value = variables[name]
        if fmt is None:  # the plugin's own format: the raw value
            return value
        if fmt == "percentencode":  # encodeURIComponent, plus !'()* (RFC 3986 unreserved only)
            return quote(value, safe="")
        raise AssertionError(f"the expander does not know the format {fmt!r}")

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", var, sql)
    start, end = f"toDateTime({int(frm.timestamp())})", f"toDateTime({int(to.timestamp())})"
    sql = re.sub(
        r"\$__timeFilter\(([^()]+)\)",
        lambda m: f"{m[1]} >= {start} AND {m[1]} <= {end}",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\(([^()]+)\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {interval} second)",
        sql,
    )
    sql = re.sub(r"\$__fromTime(?!\w)", start, sql)
    sql = re.sub(r"\$__toTime(?!\w)", end, sql)
    sql = re.sub(r"\$__interval_s(?!\w)", str(interval), sql)
    assert "$" not in sql, f"unexpanded macro or variable in:\n{sql}"
    return sql


def test_the_expander_writes_what_the_plugin_writes() -> None:
    frm, to = datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 23, 0, 30, tzinfo=UTC)
    got = expand(
        "SELECT $__timeInterval(t) FROM ${database}.x WHERE $__timeFilter(t) AND "
        "id = '${entity:percentencode}' AND k = '$kind' -- $__fromTime $__toTime $__interval_s",
        frm,
        to,
        {"database": "db", "entity": "a'b\\c 10.0.0.0/24", "kind": "account"},
    )
    assert got == (
        "SELECT toStartOfInterval(toDateTime(t), INTERVAL 60 second) FROM db.x WHERE "
        "t >= toDateTime(1795392000) AND t <= toDateTime(1795393800) AND "
        "id = 'a%27b%5Cc%2010.0.0.0%2F24' AND k = 'account' -- toDateTime(1795392000) "
        "toDateTime(1795393800) 60"
    )
    with pytest.raises(AssertionError, match="unexpanded"):
        expand("SELECT $__timeFilter_ms(t)", frm, to, {})


# ------------------------------------------------------------------ a real store


@pytest.fixture(scope="module")
def store(
    chdb_url: str, small_traffic: SimulatedTraffic, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The simulated scenario scored into its own database on the session's chDB, as `score`
    does it; returns the client, the event-time range, the receipt range of the dead letters,
    and the count of enforcement events written."""
    tmp = tmp_path_factory.mktemp("grafana")
    events, actions = tmp / "e.jsonl", tmp / "a.jsonl"
    write_traffic(small_traffic, events, None, bad_line_rate=0.002)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILLGUARD_CLICKHOUSE_DATABASE", DB)
        args = ["score", "--input", str(events), "--output", str(actions)]
        assert main([*args, "--clickhouse", chdb_url]) == 0
    client = connect(chdb_url)

    def one(sql: str) -> Any:
        return client.query(sql).result_rows[0]

    first, last = one(
        f"SELECT min(window_start), greatest(max(window_end), "
        f"(SELECT max(ts) FROM {DB}.enforcement_actions)) FROM {DB}.entity_scores"
    )
    dead_first, dead_last, dead = one(
        f"SELECT min(received_at), max(received_at), count() FROM {DB}.dead_letters FINAL"
    )
    utc = {"tzinfo": UTC}
    return {
        "client": client,
        "range": (first.replace(**utc), last.replace(**utc)),
        # `score` stamps a dead letter with the wall-clock time it read the line
        "dead_range": (
            dead_first.replace(second=0, microsecond=0, **utc),
            dead_last.replace(**utc) + timedelta(minutes=1),
        ),
        "dead_letters": dead,
        "actions": len(actions.read_bytes().splitlines()),
    }


def _run(
    store: dict[str, Any], sql: str, rng: tuple[datetime, datetime] | None = None, **variables: str
) -> list[dict[str, Any]]:
    values = {"database": DB, "kind": "account", "entity": "", **variables}
    frm, to = rng or store["range"]
    expanded = expand(sql, frm, to, values)
    result = store["client"].query(expanded)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _panel(title: str) -> list[str]:
    sqls = [t["rawSql"] for p, t in _targets("grafana-clickhouse-datasource") if p == title]
    assert sqls, f"no panel {title!r}"
    return sqls


def test_every_clickhouse_query_runs_on_a_scored_store(store: dict[str, Any]) -> None:
    targets = _targets("grafana-clickhouse-datasource")
    assert len(targets) >= 15
    for title, target in targets:
        assert target["editorType"] == "sql" and target["format"] in (0, 1), title
        try:
            _run(store, target["rawSql"])
            _run(store, target["rawSql"], store["dead_range"], kind="ip_block", entity="x")
        except Exception as e:  # name the panel
            raise AssertionError(f"panel {title!r} ({target['refId']}) fails: {e}") from e
    # the database variable lists the databases that hold distillguard's tables
    options = store["client"].query(_variable("database")["query"]).result_rows
    assert (DB,) in options


def test_traffic_and_enforcement_panels_agree_with_the_store(store: dict[str, Any]) -> None:
    (events,) = _run(store, _panel("Events scored")[0])
    per_minute = _run(store, _panel("Events scored per minute")[0])
    assert events["events"] > 100_000
    # one point per minute of the range (zero-filled), together every event once
    assert len(per_minute) >= 30
    assert sum(r["events_per_minute"] for r in per_minute) == pytest.approx(events["events"])
    levels = _run(store, _panel("Actions per minute, by level")[0])
    kinds = _run(store, _panel("Actions per minute, by entity kind")[0])
    total = sum(r[k] for r in levels for k in ("flag", "throttle", "suspend", "release"))
    assert total == pytest.approx(store["actions"]) and store["actions"] > 0
    assert sum(r["suspend"] for r in levels) > 0
    assert sum(r[k] for r in kinds for k in ("account", "ip_block", "campaign")) == pytest.approx(
        total
    )
    (acted,) = _run(store, _panel("Entities throttled / suspended")[0])
    assert acted["suspended"] > 0 and acted["throttled"] > 0
    latest = _run(store, _panel("Latest actions")[0])
    assert len(latest) == 200 and latest[0]["time"] >= latest[-1]["time"]
    assert latest[0]["top_reasons"]

    # dead letters carry their wall-clock receipt time: look where `score` wrote them
    (dead,) = _run(store, _panel("Dead letters")[0], store["dead_range"])
    by_field = _run(
        store, _panel("Dead letters per minute, by rejected field")[0], store["dead_range"]
    )
    assert dead["dead_letters"] == store["dead_letters"] > 0
    assert {r["field"] for r in by_field} >= {"$", "account_id"}


def test_top_entities_rank_by_windows_over_the_flag_threshold_then_evidence(
    store: dict[str, Any],
) -> None:
    (sql,) = _panel("Top entities in range")
    top = _run(store, sql)
    assert len(top) == 50
    keys = [(r["windows_over"], r["max_evidence"]) for r in top]
    assert keys == sorted(keys, reverse=True) and top[0]["windows_over"] > 1
    assert top[0]["max_score"] >= 0.999 and top[0]["last_action"] in ("throttle", "suspend")
    (flagged,) = _run(store, _panel("Entities at or over the flag threshold")[0])
    assert flagged["accounts"] >= sum(r["windows_over"] > 0 for r in top)
    blocks = _run(store, sql, kind="ip_block")
    assert blocks and blocks[0]["entity"].count("/") == 1  # CIDR blocks

    # the drill-down of the top entity, as clicking it sets ${entity}
    entity = top[0]["entity"]
    windows = _run(store, _panel('Drill-down: windows of $kind "$entity"')[0], entity=entity)
    actions = _run(store, _panel('Drill-down: actions on $kind "$entity"')[0], entity=entity)
    assert len(windows) == top[0]["windows"] and max(r["score"] for r in windows) >= 0.999
    assert len(actions) == top[0]["actions"]
    assert top[0]["last_action"] in {a["action"] for a in actions}
    assert actions[0]["reasons"]
    # a typed-in value never becomes SQL
    for evil in ("x' OR 1=1 --", "x\\' OR 1=1 --", entity + "' OR '1'='1"):
        assert _run(store, _panel('Drill-down: windows of $kind "$entity"')[0], entity=evil) == []


def test_distribution_and_campaign_panels_return_rows(store: dict[str, Any]) -> None:
    bands = _run(store, _panel("Calibrated scores, by band")[0])
    assert [b["band"] for b in bands][-1] == ">= 0.99995 suspend" and bands[-1]["account"] > 0
    assert sum(b["account"] for b in bands) > 10_000
    histogram = _run(store, _panel("Behaviour evidence, histogram")[0])
    assert len(histogram) > 4 and histogram[0]["evidence"] == "0-0.25"
    quantiles = _run(
        store, _panel("Account evidence quantiles and share over the flag threshold")[0]
    )
    assert len(quantiles) >= 30 and max(r["share_over_flag"] for r in quantiles) > 0.001

    members, active = (_run(store, s) for s in _panel("Campaign members over time"))
    (campaigns,) = _run(store, _panel("Active campaigns")[0])
    table = _run(store, _panel("Campaigns in range")[0])
    assert campaigns["campaigns"] > 0 and len(table) == campaigns["campaigns"]
    assert max(r["active_campaigns"] for r in active) <= campaigns["campaigns"]
    assert {r["campaign_id"] for r in members} == {r["campaign"] for r in table}
    assert any(r["last_action"] for r in table)  # enforced campaigns show their action


# ------------------------------------------------------------------ Prometheus


def _exported() -> dict[str, set[str]]:
    """Metric name -> label names, from a rendering of the worker's /metrics."""
    # the engine's real counters and sink statistics; anything else it is asked (its health,
    # say) answers as a mock does
    engine = MagicMock(spec=Engine)
    engine.metrics = Metrics(
        windows_scored={"account": 1}, actions={"flag": 1}, lag={"accounts": 0, "blocks": 0}
    )
    engine.sink = MagicMock(stats=SinkStats())
    out: dict[str, set[str]] = {}
    for line in prometheus(engine).splitlines():
        if line.startswith("# TYPE "):
            out.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            m = re.match(r"(\w+)(?:\{(.*)\})? ", line)
            assert m, line
            out.setdefault(m[1], set()).update(re.findall(r"(\w+)=", m[2] or ""))
    return out


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_PROMQL_WORDS |= {"and", "or", "unless", "offset"}


def test_every_prometheus_expression_uses_metrics_the_worker_exports() -> None:
    exported = _exported()
    assert exported.get("distillguard_consumer_lag") == {"stage"}
    targets = _targets("prometheus")
    assert any("distillguard_consumer_lag" in t["expr"] for _, t in targets)
    for title, t in targets:
        expr = t["expr"]
        grouped = {
            label.strip()
            for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in labels.split(",")
        }
        matched = set(
            re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", "".join(re.findall(r"\{[^}]*\}", expr)))
        )
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", " ", expr)
        names = {
            n
            for n in re.findall(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare)
            if n not in _PROMQL_WORDS
        }
        assert names, f"{title}: no metric in {expr!r}"
        unknown = names - exported.keys()
        assert not unknown, f"{title}: {expr!r} uses {unknown}, not exported by prometheus()"
        labels = set().union(*(exported[n] for n in names))
        assert grouped | matched <= labels, f"{title}: {expr!r} uses labels not in {labels}"


# ------------------------------------------------------------------ provisioning


def test_the_dashboard_uses_the_provisioned_data_sources() -> None:
    d = _dashboard()
    assert d["uid"] and 39 <= d["schemaVersion"] <= 41
    uids = re.findall(r"^\s+uid:\s*(\S+)\s*$", DATASOURCES.read_text(), re.MULTILINE)
    assert _variable("ch")["current"]["value"] in uids
    assert _variable("prom")["current"]["value"] in uids
    assert _variable("ch")["query"] == "grafana-clickhouse-datasource"
    query_field = {"${ch}": "rawSql", "${prom}": "expr"}  # SQL to ClickHouse, PromQL to Prometheus
    for p in _panels(d["panels"]):
        if p["type"] != "row":
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"], p["title"]
                assert t[query_field[p["datasource"]["uid"]]], p["title"]
    # the dashboard folder the provider reads is where compose mounts infra/grafana/dashboards
    path = re.search(r"^\s+path:\s*(\S+)\s*$", PROVIDERS.read_text(), re.MULTILINE)
    assert path and f"./grafana/dashboards:{path[1]}:ro" in COMPOSE.read_text()


def test_compose_and_provisioning_are_valid_yaml_and_consistent() -> None:
    yaml = pytest.importorskip("yaml")  # not a project dependency: checked where it is installed
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"kafka", "topics", "clickhouse", "worker", "prometheus", "grafana"} <= compose.keys()
    grafana, prom = compose["grafana"], compose["prometheus"]
    image, plugins = grafana["image"], grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert image.startswith("grafana/grafana-oss:") and not image.endswith(":latest")
    assert plugins.split()[0] == "grafana-clickhouse-datasource"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]

    sources = {s["type"]: s for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    ch = sources["grafana-clickhouse-datasource"]
    assert (ch["jsonData"]["host"], ch["jsonData"]["port"], ch["jsonData"]["protocol"]) == (
        "clickhouse",
        8123,
        "http",
    )
    assert (
        ch["secureJsonData"]["password"]
        == compose["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"]
    )
    assert sources["prometheus"]["url"] == "http://prometheus:9090"

    # Prometheus scrapes the worker with the worker's own token
    scrape = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"][0]
    port = compose["worker"]["environment"]["DISTILLGUARD_WEB_PORT"]
    assert scrape["dns_sd_configs"][0] == {
        "names": ["worker"],
        "type": "A",
        "port": port,
        "refresh_interval": "30s",
    }
    token_file = scrape["authorization"]["credentials_file"]
    assert prom["environment"]["DISTILLGUARD_WEB_TOKEN"].startswith("${DISTILLGUARD_WEB_TOKEN:?")
    assert f'"$$DISTILLGUARD_WEB_TOKEN" > {token_file}' in prom["command"][0]
    mount = "./grafana/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in prom["volumes"]
