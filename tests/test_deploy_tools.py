"""Each deployment file passes its own tool or schema, and every alert fires on the failure it is meant for.

hadolint (Dockerfile), check-jsonschema's copy of the compose specification (compose.yaml), kubernetes-validate
(deploy/k8s, strict) and promtool (prometheus.yml with both rule files, and the alert rules' unit tests) come with
the project's dev dependencies and ./run-tests' Debian packages, so none of these checks is ever skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(BIN))
    assert path is not None, (
        f"{name} is not installed (uv sync installs the dev tools; promtool: Debian prometheus)"
    )
    return path


def run(*argv: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_hadolint_accepts_the_dockerfile() -> None:
    run(tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile"))


def test_hadolint_would_notice_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n", encoding="utf-8")
    result = subprocess.run(
        [tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_compose_file_matches_the_compose_specification() -> None:
    out = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")
    )
    assert "ok" in out


def test_the_compose_schema_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  relay:\n    image: x\n    stop_grace_period: [30]\n", encoding="utf-8")
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))


@pytest.mark.parametrize(
    "path", [p for p in K8S_FILES if p.name != "kustomization.yaml"], ids=lambda p: p.name
)
def test_kubernetes_validate_accepts(path: Path) -> None:
    out = run(tool("kubernetes-validate"), "--strict", str(path))
    assert "passed" in out


def test_promtool_accepts_the_config_with_both_rule_files(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    # The config names the rule files by their paths inside the container; check them where they are.
    names = [Path(rule).name for rule in config["rule_files"]]
    assert names == ["recording-rules.yml", "alert-rules.yml"]
    config["rule_files"] = [str(DEPLOY / name) for name in names]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = run(tool("promtool"), "check", "config", str(local))
    assert "3 rules found" in out  # the alert rules were read


def test_every_alert_fires_on_its_failure_and_not_otherwise() -> None:
    out = run(tool("promtool"), "test", "rules", "alert-rules.test.yml", cwd=DEPLOY)
    assert "SUCCESS" in out
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((DEPLOY / "alert-rules.yml").read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    tested = yaml.safe_load((DEPLOY / "alert-rules.test.yml").read_text(encoding="utf-8"))["tests"]
    fired = {c["alertname"] for t in tested for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tested for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert alerts == fired == quiet, "every alert needs a case where it fires and one where it stays quiet"
    assert {"RelayMetricsDown", "RelayNoSessionsPossible"} <= alerts


def test_alert_rules_use_the_relays_metrics_and_job() -> None:
    from tests.test_deploy_files import _relay_series_names

    known = _relay_series_names() | {"up"}
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))["scrape_configs"]
    jobs = {job["job_name"] for job in scrape}
    for group in yaml.safe_load((DEPLOY / "alert-rules.yml").read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"\b(relay_[a-z0-9_]+|up)\b", rule["expr"]))
            assert used and used <= known, f"{rule['alert']} uses unknown {sorted(used - known)}"
            for job in re.findall(r'job="([^"]+)"', rule["expr"]):
                assert job in jobs, f"{rule['alert']} watches job {job}, which prometheus.yml does not scrape"
