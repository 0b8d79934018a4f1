"""Static checks of the container image and deployment files.

No container engine is needed: the files are parsed and checked against each other and against the relay's own
code (metric names, health route, settings). The properties that matter most are security ones: the metrics
port is never published or funneled, Funnel reaches only the public listener, no secret is committed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
SERVE_JSON = DEPLOY / "tailscale" / "serve.json"
PROMETHEUS = DEPLOY / "prometheus.yml"
RULES = DEPLOY / "recording-rules.yml"
K8S = DEPLOY / "k8s"

METRICS_PORT = 9464
PUBLIC_PORT = 8080

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})
JSON_FILES = sorted(DEPLOY.rglob("*.json"))


# ----------------------------------------------------------------------------------------------------
# helpers


def load_yaml(path: Path) -> Any:
    """The single YAML document in `path`."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(path: Path) -> list[Any]:
    """Every YAML document in `path`, empty ones left out."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    svc = compose()["services"][name]
    assert isinstance(svc, dict)
    return svc


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever of the two compose syntaxes it uses."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {k: v for k, v in pairs}
    return {str(k): str(v) for k, v in env.items()}


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def required_variables(text: str) -> set[str]:
    """Variables that compose refuses to run without (`${VAR:?...}`)."""
    return {m["name"] for m in _VAR.finditer(text) if m["op"] in (":?", "?")}


@dataclass(frozen=True)
class PortMapping:
    """One published port (range): `host_ip` is "" when compose binds every interface."""

    host_ip: str
    published: range | None  # None: Docker picks a free host port; still published.
    target: range


def _port_range(text: str) -> range:
    low, _, high = text.partition("-")
    return range(int(low), int(high or low) + 1)


def parse_port(entry: str | int | dict[str, Any]) -> PortMapping:
    """Parse a compose `ports:` entry in short (`[ip:][host:]container[/proto]`) or long syntax."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return PortMapping(
            str(entry.get("host_ip", "")),
            _port_range(str(published)) if published not in (None, "") else None,
            _port_range(str(entry["target"])),
        )
    spec = str(entry).split("/", 1)[0]
    host_ip = ""
    if spec.startswith("["):
        host_ip, _, spec = spec[1:].partition("]:")
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        host_ip, published, target = parts
    elif len(parts) == 2:
        published, target = parts
    else:
        published, target = "", parts[0]
    return PortMapping(host_ip, _port_range(published) if published else None, _port_range(target))


def published_ports() -> Iterator[tuple[str, PortMapping]]:
    for name, svc in compose()["services"].items():
        for entry in svc.get("ports") or []:
            yield name, parse_port(entry)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str


def mounts(svc: dict[str, Any]) -> list[Mount]:
    """A service's volumes (short or long syntax) as source/target pairs."""
    result = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            result.append(Mount(str(entry["source"]), str(entry["target"])))
        else:
            source, target = str(entry).split(":")[:2]
            result.append(Mount(source, target))
    return result


def bind_source(mount: Mount) -> Path | None:
    """Host path of a bind mount (relative to the compose file); None for a named volume."""
    if mount.source.startswith((".", "/")):
        return (COMPOSE.parent / mount.source).resolve()
    return None


def host_path_for(svc: dict[str, Any], container_path: str) -> Path | None:
    """The host file that appears at `container_path` inside the service, through one of its bind mounts."""
    for mount in mounts(svc):
        source = bind_source(mount)
        if source is None:
            continue
        if container_path == mount.target:
            return source
        if container_path.startswith(mount.target.rstrip("/") + "/"):
            return source / container_path[len(mount.target.rstrip("/")) + 1 :]
    return None


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuations joined and comments dropped, as the builder reads them."""
    instructions: list[Instruction] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # comment lines inside a continued instruction are removed by the builder
        if line.endswith("\\"):
            buffer += line[:-1].rstrip() + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages() -> list[list[Instruction]]:
    """Build stages: each list starts with its FROM (global ARGs before the first FROM are left out)."""
    stages: list[list[Instruction]] = []
    for ins in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if ins.keyword == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
    return stages


def dockerfile_global_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for ins in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            args[name] = value
    return args


def dockerfile_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for token in re.findall(r'(\w+)=("[^"]*"|\S+)', ins.args):
                env[token[0]] = token[1].strip('"')
    return env


_KEY_SHAPES = {
    "OpenAI API key": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    "OpenAI ephemeral key": re.compile(r"\bek_[A-Za-z0-9_-]{16,}"),
    "Tailscale key": re.compile(r"\btskey-(?:auth|client|api)-[A-Za-z0-9_-]{8,}"),
}


def key_shaped(text: str) -> list[str]:
    """Names of the secret shapes found in `text`."""
    return [name for name, pattern in _KEY_SHAPES.items() if pattern.search(text)]


# ----------------------------------------------------------------------------------------------------
# every file parses


def test_expected_files_exist() -> None:
    expected = [
        DOCKERFILE,
        DOCKERIGNORE,
        COMPOSE,
        SERVE_JSON,
        PROMETHEUS,
        RULES,
        DEPLOY / ".env.example",
        DEPLOY / "grafana/provisioning/datasources/prometheus.yaml",
        DEPLOY / "grafana/provisioning/dashboards/realtime-relay.yaml",
        K8S / "deployment.yaml",
        K8S / "service.yaml",
        K8S / "metrics-service.yaml",
        K8S / "secret.example.yaml",
        K8S / "kustomization.yaml",
    ]
    missing = [str(p.relative_to(ROOT)) for p in expected if not p.is_file()]
    assert not missing
    # The parametrised parse tests below must have something to parse.
    assert COMPOSE in YAML_FILES
    assert SERVE_JSON in JSON_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = load_yaml_all(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in docs)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


# ----------------------------------------------------------------------------------------------------
# compose: the metrics port is never published


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("9464", PortMapping("", None, range(9464, 9465))),
        ("9464:9464", PortMapping("", range(9464, 9465), range(9464, 9465))),
        ("127.0.0.1:9090:9090/tcp", PortMapping("127.0.0.1", range(9090, 9091), range(9090, 9091))),
        ("[::1]:3000:3000", PortMapping("::1", range(3000, 3001), range(3000, 3001))),
        ("9400-9500:9400-9500", PortMapping("", range(9400, 9501), range(9400, 9501))),
        (
            {"target": 9464, "published": "19464", "host_ip": "0.0.0.0"},
            PortMapping("0.0.0.0", range(19464, 19465), range(9464, 9465)),
        ),
        ({"target": 9464}, PortMapping("", None, range(9464, 9465))),
    ],
)
def test_port_parser(entry: str | dict[str, Any], expected: PortMapping) -> None:
    assert parse_port(entry) == expected


def test_compose_never_publishes_the_metrics_port() -> None:
    for name, mapping in published_ports():
        assert METRICS_PORT not in mapping.target, f"{name} publishes container port {METRICS_PORT}"
        assert mapping.published is None or METRICS_PORT not in mapping.published, (
            f"{name} publishes host port {METRICS_PORT}"
        )


def test_compose_publishes_nothing_beyond_this_host() -> None:
    # The relay is public through Funnel only; the Prometheus and Grafana UIs stay on the host's loopback.
    for name, mapping in published_ports():
        assert mapping.host_ip, f"{name} publishes a port on every interface"
        assert ipaddress.ip_address(mapping.host_ip).is_loopback, f"{name} publishes on {mapping.host_ip}"


def test_compose_relay_shares_the_sidecar_namespace() -> None:
    relay, tailscale = service("relay"), service("tailscale")
    assert relay["network_mode"] == "service:tailscale"
    assert "ports" not in relay and "ports" not in tailscale
    for name, svc in compose()["services"].items():
        assert svc.get("network_mode") != "host", f"{name} uses the host network"


def with_defaults(value: str) -> str:
    """A compose value with every `${VAR:-default}` replaced by its default, as compose does when VAR is unset."""
    return _VAR.sub(lambda m: m["arg"] if m["op"] in (":-", "-") else m[0], value)


def test_compose_relay_listeners() -> None:
    env = environment(service("relay"))
    # Public listener on loopback: only the Tailscale proxy (same namespace) can reach it.
    assert ipaddress.ip_address(env["RELAY_HOST"]).is_loopback
    assert int(env["RELAY_PORT"]) == PUBLIC_PORT
    assert int(env["RELAY_METRICS_PORT"]) == METRICS_PORT
    # Metrics only on the sidecar's fixed address on the private compose network: 0.0.0.0 would include the
    # node's tailnet address, where every tailnet device could read them.
    metrics_host = with_defaults(env["RELAY_METRICS_HOST"])
    assert not ipaddress.ip_address(metrics_host).is_unspecified
    (network,) = service("tailscale")["networks"]
    assert with_defaults(service("tailscale")["networks"][network]["ipv4_address"]) == metrics_host
    assert env["RELAY_METRICS_HOST"] == service("tailscale")["networks"][network]["ipv4_address"]
    (subnet,) = compose()["networks"][network]["ipam"]["config"]
    assert ipaddress.ip_address(metrics_host) in ipaddress.ip_network(with_defaults(subnet["subnet"]))
    assert ipaddress.ip_network(with_defaults(subnet["subnet"])).is_private
    # Prometheus scrapes it over that network.
    assert network in service("prometheus")["networks"]


def test_compose_sidecar_health_gates_the_relay() -> None:
    ts = service("tailscale")
    env = environment(ts)
    assert env["TS_ENABLE_HEALTH_CHECK"] == "true"
    local = env["TS_LOCAL_ADDR_PORT"]
    assert ipaddress.ip_address(local.rsplit(":", 1)[0]).is_loopback  # not on the tailnet address
    test = ts["healthcheck"]["test"]
    assert test[0] == "CMD" and f"http://{local}/healthz" in test
    assert service("relay")["depends_on"]["tailscale"] == {"condition": "service_healthy", "restart": True}


def test_compose_images_are_pinned_by_digest() -> None:
    for name, svc in compose()["services"].items():
        if "build" in svc:
            continue
        assert DIGEST_PINNED.match(svc["image"]), f"{name}: {svc['image']} is not pinned by tag and digest"
        assert ":" in svc["image"].split("@")[0], f"{name}: keep the tag beside the digest, for people"


def test_compose_secrets_come_from_the_env_file() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    relay_env = environment(service("relay"))
    for name in ("OPENAI_API_KEY", "RELAY_ACCESS_TOKENS"):
        assert relay_env[name] == f"${{{name}:?set {name} in deploy/.env}}"
    assert environment(service("tailscale"))["TS_AUTHKEY"].startswith("${TS_AUTHKEY")
    # The relay's key must not leak into the sidecar, nor the tailnet key into the relay.
    assert "OPENAI_API_KEY" not in environment(service("tailscale"))
    assert "TS_AUTHKEY" not in relay_env
    assert "env_file" not in text

    example = DEPLOY / ".env.example"
    example_vars = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in example.read_text(encoding="utf-8").splitlines()
        if "=" in line
    }
    missing = required_variables(text) - example_vars
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_file_is_never_committed_nor_sent_to_the_build() -> None:
    assert ".env" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").splitlines()
    ignore = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    assert "**/.env" in ignore
    assert not any(line.startswith("!") and ".env" in line for line in ignore)


def test_compose_tailscale_sidecar() -> None:
    ts = service("tailscale")
    env = environment(ts)
    assert ts["image"].startswith("tailscale/tailscale:")
    assert env["TS_HOSTNAME"]
    # The serve config is the file this repository ships.
    assert host_path_for(ts, env["TS_SERVE_CONFIG"]) == SERVE_JSON.resolve()
    # State survives restarts in a named volume.
    state = [m for m in mounts(ts) if m.target == env["TS_STATE_DIR"]]
    assert state and bind_source(state[0]) is None and state[0].source in compose()["volumes"]
    # Userspace networking would forward tailnet peers to 127.0.0.1:<any port>, bypassing the Serve proxy.
    assert env["TS_USERSPACE"] == "false"
    assert "/dev/net/tun:/dev/net/tun" in ts["devices"]


def test_compose_bind_mounts_exist() -> None:
    for name, svc in compose()["services"].items():
        for mount in mounts(svc):
            source = bind_source(mount)
            assert source is None or source.exists(), f"{name}: {mount.source} does not exist"
            if source is None:
                assert mount.source in compose()["volumes"], f"{name}: undeclared volume {mount.source}"


def test_compose_builds_the_repository_image() -> None:
    build = service("relay")["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE.resolve()


def test_compose_relay_is_locked_down() -> None:
    relay = service("relay")
    assert relay["read_only"] is True
    assert relay["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in relay["security_opt"]
    grace = str(relay["stop_grace_period"])
    assert grace.endswith("s") and int(grace[:-1]) >= drain_seconds() + CLOSE_MARGIN_SECONDS


#: Closing the sessions after the drain took 1.8 s more (a 10 s drain stopped after 11.8 s): with room to spare.
CLOSE_MARGIN_SECONDS = 5


def drain_seconds(env: dict[str, str] | None = None) -> float:
    """RELAY_DRAIN_SECONDS as the relay resolves it from `env` (its own default when unset)."""
    from relay.config import load_config

    return load_config({k: v for k, v in (env or {}).items() if k == "RELAY_DRAIN_SECONDS"}).drain_seconds


def test_k8s_grace_period_covers_pre_stop_and_drain() -> None:
    pod = _k8s_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = int(pre_stop[1]) + drain_seconds(env) + CLOSE_MARGIN_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= needed


# ----------------------------------------------------------------------------------------------------
# Tailscale serve config: Funnel on 443 to the public listener, nothing else


def test_serve_json_funnels_only_443_to_the_relay() -> None:
    serve = json.loads(SERVE_JSON.read_text(encoding="utf-8"))
    assert set(serve) == {"TCP", "Web", "AllowFunnel"}
    assert serve["TCP"] == {"443": {"HTTPS": True}}

    assert list(serve["Web"]) == ["${TS_CERT_DOMAIN}:443"]
    relay_port = int(environment(service("relay"))["RELAY_PORT"])
    for host_port, web in serve["Web"].items():
        assert host_port.endswith(":443")
        assert web["Handlers"], "no handler"
        for path, handler in web["Handlers"].items():
            assert set(handler) == {"Proxy"}, f"{path}: only proxying to the relay is allowed"
            assert handler["Proxy"] == f"http://127.0.0.1:{relay_port}"
            assert str(METRICS_PORT) not in handler["Proxy"]

    assert serve["AllowFunnel"] == {"${TS_CERT_DOMAIN}:443": True}


# ----------------------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_scrapes_the_metrics_port() -> None:
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["realtime-relay"]
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    # The relay has no network identity of its own: it is reached through the service whose namespace it
    # shares.
    namespace_owner = service("relay")["network_mode"].removeprefix("service:")
    relay_metrics_port = int(environment(service("relay"))["RELAY_METRICS_PORT"])
    assert targets == [f"{namespace_owner}:{relay_metrics_port}"]
    for target in targets:
        assert not target.endswith(f":{PUBLIC_PORT}")


def test_prometheus_rule_files_are_mounted() -> None:
    config = load_yaml(PROMETHEUS)
    prom = service("prometheus")
    assert host_path_for(prom, "/etc/prometheus/prometheus.yml") == PROMETHEUS.resolve()
    for rule_file in config["rule_files"]:
        host = host_path_for(prom, rule_file)
        assert host is not None and host.is_file(), f"{rule_file} is not mounted from a file in deploy/"


def _relay_series_names() -> set[str]:
    """Every series name the relay can expose, from its own metric definitions."""
    from relay.metrics import RelayMetrics

    names: set[str] = set()
    for family in RelayMetrics().registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        else:
            names.add(family.name)
    return names


def test_recording_rules_use_existing_metrics() -> None:
    known = _relay_series_names()
    rules = [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    assert any("first_audio" in rule["record"] for rule in rules)
    for rule in rules:
        used = set(re.findall(r"\brelay_[a-z0-9_]+", rule["expr"]))
        assert used, f"{rule['record']} uses no relay metric"
        assert used <= known, f"{rule['record']} uses unknown {sorted(used - known)}"


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_first_audio_quantile_rules_compute_the_quantiles(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    # Every 5 s: 5 answers within 0.2 s, 4 more within 0.5 s, 1 more within 1 s. With linear interpolation
    # inside a bucket the median is 0.2 s and the 95th percentile 0.75 s.
    name = "relay_response_first_audio_seconds_bucket"
    per_step = {"0.1": 0, "0.2": 5, "0.5": 9, "1.0": 10, "+Inf": 10}
    series = [
        {"series": f'{name}{{le="{le}",trigger="server_vad"}}', "values": f"0+{step}x60"}
        for le, step in per_step.items()
    ]
    # Rounded to 1 ms: the quantile comes out of float arithmetic on rates (0.7499999999999998).
    checks = [
        {
            "expr": f"round(relay:response_first_audio_seconds:{quantile}_1m, 0.001)",
            "eval_time": "3m",
            "exp_samples": [{"labels": "{}", "value": expected}],
        }
        for quantile, expected in (("p50", 0.2), ("p95", 0.75))
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "5s",
        "tests": [{"interval": "5s", "input_series": series, "promql_expr_test": checks}],
    }
    test_file = tmp_path / "rules-test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------------
# Grafana provisioning


def test_grafana_provisioning_points_at_the_stack() -> None:
    grafana = service("grafana")
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    prom = next(ds for ds in datasources if ds["type"] == "prometheus")
    assert prom["uid"] == "prometheus"
    assert prom["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]

    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/realtime-relay.yaml")["providers"][0]
    assert host_path_for(grafana, provider["options"]["path"]) == (DEPLOY / "grafana/dashboards").resolve()
    assert host_path_for(grafana, "/etc/grafana/provisioning") == (DEPLOY / "grafana/provisioning").resolve()
    assert "GRAFANA_ADMIN_PASSWORD" in required_variables(COMPOSE.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------
# Dockerfile


DIGEST_PINNED = re.compile(r"^[a-z0-9.\-/]+(:[\w.\-]+)?@sha256:[0-9a-f]{64}$")


def test_dockerfile_entrypoint_and_base() -> None:
    stages = dockerfile_stages()
    final = stages[-1]
    entrypoints = [ins.args for ins in final if ins.keyword == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["realtime-relay"]

    args = dockerfile_global_args()
    # Every base comes in through a build argument (so a mirror or a local stand-in can replace it) whose default
    # is pinned by digest: a tag can be moved to other content, a digest cannot.
    assert set(args) >= {"PYTHON_IMAGE", "UV_IMAGE"}
    for name in ("PYTHON_IMAGE", "UV_IMAGE"):
        assert DIGEST_PINNED.match(args[name]), f"{name}={args[name]} is not pinned by digest"
    assert args["PYTHON_IMAGE"].startswith("python:3.11.")
    assert args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")
    froms = [stage[0].args.split()[0] for stage in stages]
    assert froms == ["${UV_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    # The runtime stage must be the same image as the builder: the venv links to the base image's interpreter.
    assert froms[-1] == froms[1]


def test_dockerfile_installs_from_the_lock_file() -> None:
    runs = [ins.args for stage in dockerfile_stages() for ins in stage if ins.keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs, "no uv sync"
    for run in syncs:
        # --locked, not --frozen: a lock that no longer matches pyproject.toml fails the build.
        assert "--locked" in run.split() and "--frozen" not in run.split() and "--no-dev" in run.split(), run
    # The last sync installs the project itself as a wheel, so the venv does not depend on the source tree.
    assert "--no-editable" in syncs[-1].split()
    assert "--no-install-project" in syncs[0].split()
    assert any("source=uv.lock" in run for run in syncs) or any(
        ins.keyword == "COPY" and "uv.lock" in ins.args for stage in dockerfile_stages() for ins in stage
    )


def test_build_backend_is_locked() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (backend,) = project["build-system"]["requires"]
    assert re.fullmatch(r"hatchling==[\d.]+", backend), backend
    constraints = project["tool"]["uv"]["build-constraint-dependencies"]
    assert backend in constraints
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.]+", c) for c in constraints), constraints
    # uv.lock records the build constraints, so `uv sync --locked` fails when they change without a new lock.
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    manifest = lock.split("[manifest]", 1)[1].split("[[package]]", 1)[0]
    for constraint in constraints:
        name, version = constraint.split("==")
        assert f'{{ name = "{name}", specifier = "=={version}" }}' in manifest, constraint


def test_dockerfile_labels() -> None:
    labels = " ".join(ins.args for ins in dockerfile_stages()[-1] if ins.keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.base.name="${PYTHON_IMAGE}"' in labels


def test_dockerfile_runtime_settings() -> None:
    final = dockerfile_stages()[-1]
    env = dockerfile_env(final)
    assert env["RELAY_HOST"] == "0.0.0.0"
    assert env["RELAY_METRICS_HOST"] == "0.0.0.0"
    assert env["RELAY_LOG_FORMAT"] == "json"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert int(env["RELAY_PORT"]) == PUBLIC_PORT and int(env["RELAY_METRICS_PORT"]) == METRICS_PORT

    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    exposed = {int(p.split("/")[0]) for ins in final if ins.keyword == "EXPOSE" for p in ins.args.split()}
    assert exposed == {PUBLIC_PORT, METRICS_PORT}
    assert [ins.args for ins in final if ins.keyword == "STOPSIGNAL"] == ["SIGTERM"]


def test_dockerfile_user_matches_kubernetes() -> None:
    user = [ins.args for ins in dockerfile_stages()[-1] if ins.keyword == "USER"][-1]
    uid, _, gid = user.partition(":")
    deployment = _k8s_kind("Deployment")
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (str(pod_security["runAsUser"]), str(pod_security["runAsGroup"])) == (uid, gid)


def test_dockerfile_healthcheck_asks_the_running_relay() -> None:
    checks = [ins.args for ins in dockerfile_stages()[-1] if ins.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    argv = json.loads(checks[0].split(" CMD ", 1)[1])
    assert argv == ["python", "-m", "relay.healthcheck"]
    assert (ROOT / "relay" / "healthcheck.py").is_file()
    # Its timeout must leave room for the check's own HTTP timeout.
    timeout = re.search(r"--timeout=(\d+)s", checks[0])
    assert timeout and int(timeout[1]) > 2


def test_dockerignore_admits_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the build context should start from nothing"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    needed: set[str] = set()
    for stage in dockerfile_stages():
        for ins in stage:
            if ins.keyword == "COPY" and "--from" not in ins.args:
                needed |= {Path(src).parts[0] for src in ins.args.split()[:-1]}
            if ins.keyword == "RUN":
                needed |= set(re.findall(r"type=bind,source=([^,\s]+)", ins.args))
    assert needed, "no COPY found"
    assert needed <= admitted, f"excluded from the build context: {sorted(needed - admitted)}"
    for name in needed:
        assert (ROOT / name).exists(), name


# ----------------------------------------------------------------------------------------------------
# Kubernetes


def _k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_yaml_all(path)]


def _k8s_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in _k8s_docs() if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}"
    return found[0]


def test_k8s_deployment() -> None:
    deployment = _k8s_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PUBLIC_PORT, "metrics": METRICS_PORT}
    env = {e["name"]: e for e in container["env"]}
    assert int(env["RELAY_PORT"]["value"]) == PUBLIC_PORT
    assert int(env["RELAY_METRICS_PORT"]["value"]) == METRICS_PORT

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # A read-only root still needs a writable /tmp.
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounted

    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)


def test_k8s_services_split_public_and_metrics() -> None:
    public = _k8s_kind("Service", "realtime-relay")
    assert [(p["port"], p["targetPort"]) for p in public["spec"]["ports"]] == [(PUBLIC_PORT, "http")]
    assert public["spec"]["type"] == "ClusterIP"
    metrics = _k8s_kind("Service", "realtime-relay-metrics")
    assert [(p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [(METRICS_PORT, "metrics")]
    assert metrics["spec"]["type"] == "ClusterIP"
    pod_labels = _k8s_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    for svc in (public, metrics):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_k8s_secret_example_matches_the_deployment() -> None:
    secret = _k8s_kind("Secret")
    values = secret["stringData"]
    for value in values.values():
        assert "replace-with" in value, "example Secret values must be placeholders"
    container = _k8s_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    volumes = _k8s_kind("Deployment")["spec"]["template"]["spec"]["volumes"]
    refs += [
        {"name": v["secret"]["secretName"], "key": i["key"]}
        for v in volumes
        if "secret" in v
        for i in v["secret"]["items"]
    ]
    assert refs
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in values


def test_k8s_kustomization_leaves_out_the_secret() -> None:
    resources = load_yaml(K8S / "kustomization.yaml")["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in resources
    assert "ingress.yaml" in resources and "networkpolicy.yaml" in resources


def test_k8s_kustomization_names_the_registry() -> None:
    container = _k8s_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    (image,) = [
        i
        for i in load_yaml(K8S / "kustomization.yaml")["images"]
        if i["name"] == container["image"].split(":")[0]
    ]
    # Without newName the pod pulls docker.io/library/realtime-relay, which does not exist.
    assert "/" in image["newName"] and image["newTag"]


def test_k8s_ingress_reaches_the_public_port_for_as_long_as_a_session_lasts() -> None:
    from relay.config import load_config

    defaults = load_config({})
    ingress = _k8s_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    public = _k8s_kind("Service", backend["name"])
    assert [p["port"] for p in public["spec"]["ports"] if p["name"] == backend["port"]["name"]] == [
        PUBLIC_PORT
    ]
    assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        seconds = int(annotations[f"nginx.ingress.kubernetes.io/{name}"])
        assert seconds > max(defaults.idle_timeout_seconds, defaults.max_session_seconds), name


# ----------------------------------------------------------------------------------------------------
# no secrets


def test_key_detector_finds_key_shapes() -> None:
    # Built at run time so that this file itself holds nothing key-shaped.
    body = "Ab3" * 12
    assert key_shaped("OPENAI_API_KEY=sk-" + body) == ["OpenAI API key"]
    assert key_shaped("sk-proj-" + body) == ["OpenAI API key"]
    assert key_shaped('{"value": "ek_' + body + '"}') == ["OpenAI ephemeral key"]
    assert key_shaped("TS_AUTHKEY=tskey-auth-" + body) == ["Tailscale key"]
    assert key_shaped("OPENAI_API_KEY=replace-with-your-openai-api-key") == []
    assert key_shaped("task-" + body) == []


def _deploy_text_files() -> list[Path]:
    files = [DOCKERFILE, DOCKERIGNORE, *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]
    assert len(files) > 10
    return files


def test_no_file_holds_a_real_looking_key() -> None:
    for path in _deploy_text_files():
        found = key_shaped(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(ROOT)} holds something shaped like a {found}"


def test_env_example_ships_secrets_empty_and_compose_requires_them() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    required = required_variables(text)
    secrets = []
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if any(word in name for word in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
            # A placeholder copied as it is would be used as it is; empty makes compose stop and say what to set.
            assert value == "", f"{name} must be empty in .env.example"
            secrets.append(name)
    assert {"RELAY_ACCESS_TOKENS", "RELAY_COOKIE_SECRET", "OPENAI_API_KEY"} <= set(secrets)
    assert {
        "RELAY_ACCESS_TOKENS",
        "RELAY_COOKIE_SECRET",
        "OPENAI_API_KEY",
        "GRAFANA_ADMIN_PASSWORD",
    } <= required


# ----------------------------------------------------------------------------------------------------
# the dashboard reads the recording rules


def test_dashboard_uses_the_recording_rules_and_shows_failed_sign_ins() -> None:
    from tests.test_dashboard import RECORDED, expanded, expressions, load, recording_rules

    exprs = expressions(load())
    used = {m[1] for expr in exprs for m in RECORDED.finditer(expr)}
    recorded = set(recording_rules())
    assert used <= recorded, f"the dashboard queries series no rule records: {sorted(used - recorded)}"
    assert recorded - used == set(), f"recording rules no panel uses: {sorted(recorded - used)}"
    for expr in exprs:
        # A recorded quantile keeps `instance`: the dashboard's instance picker still applies to it.
        for match in RECORDED.finditer(expr):
            assert match[2] and 'instance=~"$instance"' in match[2], expr
    sign_ins = [e for e in exprs if "relay_login_failures_total" in expanded(e)]
    assert sign_ins and all("by (reason)" in e for e in sign_ins)
    from relay.metrics import RelayMetrics

    assert "relay_login_failures" in {f.name for f in RelayMetrics().registry.collect()}


# ----------------------------------------------------------------------------------------------------
# every path a deployment file names is a route of the relay


def _public_routes() -> set[str]:
    from relay.app import create_app
    from relay.config import Config

    return {str(getattr(route, "path", "")) for route in create_app(Config()).routes}


def test_probe_and_health_check_paths_are_routes_of_the_public_app() -> None:
    routes = _public_routes()
    container = _k8s_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    probes = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {"/healthz", "/readyz"} and probes <= routes
    from relay.healthcheck import RelayProcess as Process
    from relay.healthcheck import health_url

    assert health_url(Process(1, [], {})).rsplit(":", 1)[1].split("/", 1)[1] == "healthz"
    assert "/healthz" in routes
    ingress_paths = {p["path"] for r in _k8s_kind("Ingress")["spec"]["rules"] for p in r["http"]["paths"]}
    assert ingress_paths == {"/"}  # everything of the public app, which never serves /metrics
    assert "/metrics" not in routes
    annotations = _k8s_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_ports_the_files_use_are_the_relays_defaults() -> None:
    # Every port check above compares with these two; they in turn are the relay's own defaults.
    from relay.config import load_config

    defaults = load_config({})
    assert (defaults.port, defaults.metrics_port) == (PUBLIC_PORT, METRICS_PORT)
    env = dockerfile_env(dockerfile_stages()[-1])
    assert load_config(env).port == PUBLIC_PORT and load_config(env).metrics_port == METRICS_PORT
