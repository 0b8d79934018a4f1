"""The Grafana dashboard loads, is provisioned by the stack, and queries only metrics the relay exports."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import generate_latest

from relay.fake.server import FakeRealtimeServer
from tests.conftest import ProxiedRelay
from tests.harness import REPO
from tests.test_metrics import RealtimeClient, parse_exposition
from tests.test_relay_sdk import voiced_turn

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "relay.json"
METRIC_NAME = re.compile(r"\b((?:relay|process)_[a-z_]+)\b")


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


RECORDING_RULES = REPO / "deploy" / "recording-rules.yml"
RECORDED = re.compile(r"\b(relay:[a-z0-9_:]+)(\{[^}]*\})?")


def recording_rules() -> dict[str, str]:
    """Recorded series name -> the expression that records it (deploy/recording-rules.yml)."""
    import yaml

    groups = yaml.safe_load(RECORDING_RULES.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def expanded(expr: str) -> str:
    """`expr` with each recorded series replaced by the expression that records it."""
    rules = recording_rules()
    return RECORDED.sub(lambda m: f"({rules[m[1]]})", expr)


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = load()
    assert dashboard["uid"] == "realtime-relay" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        covered = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    for panel in query_panels(dashboard):
        assert panel["title"] and panel["description"], "every panel says what it shows"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(t["expr"].strip() for t in panel["targets"])


def test_dashboard_uses_the_provisioned_datasource_and_folder() -> None:
    dashboard = load()
    datasource_file = (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    uid = re.search(r"^\s+uid:\s*(\S+)", datasource_file, flags=re.MULTILINE)
    assert uid is not None
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid.group(1)}
        assert all(t["datasource"]["uid"] == uid.group(1) for t in panel["targets"])
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid.group(1)
    # The file provider loads every *.json from the folder the compose file mounts this directory at.
    provider = (GRAFANA / "provisioning" / "dashboards" / "realtime-relay.yaml").read_text()
    assert re.search(r"^\s+type:\s*file\s*$", provider, flags=re.MULTILINE)
    assert re.search(r"^\s+path:\s*/etc/grafana/dashboards\s*$", provider, flags=re.MULTILINE)
    compose = (REPO / "deploy" / "compose.yaml").read_text()
    assert "./grafana/dashboards:/etc/grafana/dashboards" in compose
    assert DASHBOARD.parent == GRAFANA / "dashboards" and DASHBOARD.suffix == ".json"


def test_dashboard_has_the_panels_operators_need() -> None:
    exprs = [expanded(expr) for expr in expressions(load())]

    def has(*needles: str) -> bool:
        return any(all(n in e for n in needles) for e in exprs)

    assert has("sum(relay_sessions_active")
    for quantile in ("0.5", "0.95", "0.99"):
        assert has(f"histogram_quantile({quantile}", "relay_response_first_audio_seconds_bucket")
    assert has("relay_forward_latency_seconds_bucket", "direction")
    assert has("relay_upstream_connect_seconds_bucket")
    assert has("relay_errors_total", "by (code)")
    assert has("relay_rejected_connections_total", "by (reason)")
    assert has("relay_tokens_total", "* 60")
    # Providers compared side by side.
    assert has("histogram_quantile(0.95", "relay_provider_first_audio_seconds_bucket", "provider")
    assert has("relay_provider_sessions_total", "by (provider, outcome)")


async def test_every_metric_the_dashboard_queries_is_exported(
    relay: ProxiedRelay, fake_upstream: FakeRealtimeServer
) -> None:
    # One voice turn, so that series that appear only when reported (rate limits) are there too.
    client = await RealtimeClient.open(relay.ws_url)
    await client.send_audio(voiced_turn(), 24000)
    await client.wait_for("rate_limits.updated")
    await client.close()
    exported = {name for name, _ in parse_exposition(generate_latest(relay.metrics.registry).decode())}
    queried = {name for expr in expressions(load()) for name in METRIC_NAME.findall(expanded(expr))}
    assert len(queried) >= 10
    missing = queried - exported
    assert not missing, f"the dashboard queries metrics the relay does not export: {sorted(missing)}"
