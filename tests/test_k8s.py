"""The Kubernetes manifests validate against the Kubernetes schemas, and agree with the relay's own code.

kubernetes-validate checks every object against the schemas of the Kubernetes version below (strict: unknown
fields are errors). The ServiceMonitor is a Prometheus Operator resource that has no schema there; its shape is
checked here instead. The rest reads both the manifests and the relay (settings, routes, metric names, drain
timing) so that probes, ports, grace periods and the autoscaler's metric cannot drift apart.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from starlette.routing import Route

from relay.app import create_app
from relay.config import load_config
from relay.metrics import RelayMetrics
from relay.workers.cores import worker_count, workers_problem
from relay.workers.supervisor import stop_deadline

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33"
#: Custom resources without a schema in kubernetes-validate, checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor"}


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted([*K8S.glob("*.yaml"), *K8S.glob("monitoring/*.yaml")]):
        if path.name == "kustomization.yaml":
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def kind(name: str, object_name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for _, doc in manifests()
        if doc["kind"] == name and (object_name is None or doc["metadata"]["name"] == object_name)
    ]
    assert len(found) == 1, f"expected one {name} {object_name or ''}, found {len(found)}"
    return found[0]


def relay_container() -> dict[str, Any]:
    (container,) = kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def deployed_config() -> Any:
    """The relay's settings as the Deployment sets them (values from Secrets stand in as placeholders)."""
    env: dict[str, str] = {}
    for entry in relay_container()["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    env.pop("RELAY_ACCESS_TOKENS_FILE")  # a file in the pod
    # Kubernetes expands $(REDIS_PASSWORD) from the Secret.
    env["RELAY_REDIS_URL"] = env["RELAY_REDIS_URL"].replace("$(REDIS_PASSWORD)", "placeholder")
    return load_config(env=env)


@pytest.mark.parametrize(("path", "doc"), manifests(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_manifests_validate_against_the_kubernetes_schemas(path: Path, doc: dict[str, Any]) -> None:
    if doc["kind"] in CUSTOM_KINDS:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_manifest() -> None:
    hpa = copy.deepcopy(kind("HorizontalPodAutoscaler"))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    hpa = copy.deepcopy(kind("HorizontalPodAutoscaler"))
    hpa["spec"]["metrics"][0]["pods"]["targett"] = hpa["spec"]["metrics"][0]["pods"].pop("target")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_the_new_objects_and_leaves_custom_resources_out() -> None:
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert {"hpa.yaml", "pdb.yaml", "redis.yaml"} <= set(resources)
    # Custom resources need their operator's CRDs: applied separately, never by the default kustomization.
    assert not [r for r in resources if r.startswith("monitoring")]


def test_probes_and_ports_are_the_relays() -> None:
    config = deployed_config()
    container = relay_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.port, "metrics": config.metrics_port}
    routes = {r.path for r in create_app(config).routes if isinstance(r, Route)}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ports and get["path"] in routes, probe
    # Readiness is the route that turns 503 the moment a drain starts; liveness is not (a draining pod is alive).
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for service in (kind("Service", "realtime-relay"), kind("Service", "realtime-relay-metrics")):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports


def test_the_grace_period_outlasts_prestop_and_the_drain() -> None:
    config = deployed_config()
    pod = kind("Deployment")["spec"]["template"]["spec"]
    pre_stop = relay_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert config.drain_seconds == 20
    # The kubelet waits preStop, then sends SIGTERM; the relay drains, closes what is left, and exits.
    needed = int(pre_stop[1]) + stop_deadline(config)
    assert pod["terminationGracePeriodSeconds"] > needed, (pod["terminationGracePeriodSeconds"], needed)
    strategy = kind("Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_autoscaler_scales_on_the_relays_own_session_gauge_with_cpu_as_fallback() -> None:
    hpa = kind("HorizontalPodAutoscaler")
    deployment = kind("Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert relay_container()["resources"]["requests"]["cpu"], "CPU utilization is relative to the request"
    metric = by_type["Pods"]["pods"]["metric"]["name"]
    families = {m.name: m.type for m in RelayMetrics().registry.collect()}
    assert families.get(metric) == "gauge", f"{metric} is not a gauge the relay exports"
    # The adapter rule serves exactly that series, summed per pod over the pod's workers.
    adapter = yaml.safe_load(kind("ConfigMap", "prometheus-adapter-realtime-relay")["data"]["config.yaml"])
    (rule,) = adapter["rules"]
    assert rule["seriesQuery"].startswith(metric + "{")
    assert rule["name"]["as"] == metric and re.fullmatch(rule["name"]["matches"], metric)
    assert rule["metricsQuery"] == "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_disruptions_and_scraping_select_the_relay_pods() -> None:
    pod_labels = kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == pod_labels
    assert pdb["spec"]["maxUnavailable"] == 1
    monitor = kind("ServiceMonitor")
    metrics_service = kind("Service", "realtime-relay-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in metrics_service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_the_relay_reaches_the_redis_statefulset() -> None:
    config = deployed_config()
    assert workers_problem(worker_count(config.workers), config.redis_url) is None
    url = urlsplit(config.redis_url)
    service = kind("Service", url.hostname)
    statefulset = kind("StatefulSet")
    (redis,) = statefulset["spec"]["template"]["spec"]["containers"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port
    assert port["targetPort"] in {p["name"] for p in redis["ports"]}
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]
    # The password the relay sends is the one Redis requires: the same Secret key.
    relay_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in relay_container()["env"] if "valueFrom" in e
    }
    redis_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"] if "valueFrom" in e}
    assert url.password == "placeholder" and relay_refs["REDIS_PASSWORD"] == redis_refs["REDIS_PASSWORD"]
    assert "$(REDIS_PASSWORD)" in redis["args"]
    # Only relay pods may connect.
    policy = kind("NetworkPolicy", "realtime-relay-redis")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": kind("Deployment")["spec"]["template"]["metadata"]["labels"]}}
    ]
    assert rule["ports"] == [{"port": url.port, "protocol": "TCP"}]


def test_compose_starts_redis_with_the_workers_profile() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    redis = compose["services"]["redis"]
    assert redis["profiles"] == ["workers"]
    assert "ports" not in redis
    env = compose["services"]["relay"]["environment"]
    assert env["RELAY_WORKERS"] == "${RELAY_WORKERS:-1}" and env["RELAY_REDIS_URL"] == "${RELAY_REDIS_URL:-}"
    example = (ROOT / "deploy" / ".env.example").read_text()
    assert "COMPOSE_PROFILES=workers" in example and "RELAY_REDIS_URL=redis://redis:6379/0" in example
