"""The aggregator chart rendered by Helm's own engine (helm-python-sdk: Helm v4's Go SDK) with a
real provisioned federation's files, and every manifest validated strictly against the
Kubernetes API schemas (kubernetes-validate). The tools live in their own venv
(deploy/helm/tools-requirements.txt, made by .ci/run in build/helm-tools); without it this
test skips, and under CI=true it fails."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.provisioning import Federation
from tests.deploy.conftest import DEPLOY, REPO

CHART = DEPLOY / "helm" / "healthfed-aggregator"
TOOLS_PYTHON = Path(os.environ.get("HEALTHFED_HELM_PYTHON", REPO / "build" / "helm-tools" / "bin" / "python"))


def _render(federation: Federation, tmp_path: Path, *extra: str, with_secret: bool = True,
            operator: str | None = "C. Lee") -> tuple[int, dict[str, Any]]:
    if not TOOLS_PYTHON.exists():
        message = (f"no chart tools at {TOOLS_PYTHON}: python3.11 -m venv build/helm-tools && "
                   "build/helm-tools/bin/pip install -r deploy/helm/tools-requirements.txt")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    aggregator = federation.aggregator_dir
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "demo"}))
    args = [f"planJson={plan}"]
    if with_secret:
        args += [f"federation.aggregatorYaml={aggregator / 'aggregator.yaml'}", f"tls.caCert={aggregator / 'ca.pem'}",
                 f"tls.serverCert={aggregator / 'server.pem'}", f"tls.serverKey={aggregator / 'server.key'}"]
    for record in sorted((aggregator / "enrolled").glob("*.json")):
        args.append(f"enrolled.{record.stem}={record}")
    command = [str(TOOLS_PYTHON), str(DEPLOY / "helm" / "render_check.py"), str(CHART), "--out", str(tmp_path / "out")]
    for item in args:
        command += ["--set-file", item]
    if operator is not None:
        command += ["--set-json", f"operator={json.dumps(operator)}"]
    result = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, json.loads(result.stdout)


def test_chart_renders_and_every_manifest_is_valid_kubernetes(federation_dir: Federation, tmp_path: Path) -> None:
    status, report = _render(federation_dir, tmp_path, "--set-json", 'service={"type": "LoadBalancer", "port": 50051}')
    assert status == 0, report
    kinds = sorted(d["kind"] for d in report["documents"])
    assert kinds == ["ConfigMap", "ConfigMap", "Secret", "Service", "Service", "StatefulSet"]
    statefulset = next(yaml.safe_load_all((tmp_path / "out" / "statefulset.yaml").read_text()))
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["automountServiceAccountToken"] is False
    secret = yaml.safe_load((tmp_path / "out" / "secret.yaml").read_text())
    assert set(secret["data"]) == {"aggregator.yaml", "ca.pem", "server.pem", "server.key"}  # never ca.key
    enrolled = yaml.safe_load((tmp_path / "out" / "enrolled.yaml").read_text())
    assert set(enrolled["data"]) == {f"{silo}.json" for silo in ("st-marys", "riverside", "hillcrest")}
    assert {"name": "HEALTHFED_OPERATOR", "value": "C. Lee"} in container["env"]


def test_a_manifest_kubernetes_would_refuse_is_caught(federation_dir: Federation, tmp_path: Path) -> None:
    """The validator is real: a value that renders a wrong type fails the schema check."""
    status, report = _render(federation_dir, tmp_path, "--set-json", 'securityContext={"capabilities": {"drop": "ALL"}}')
    assert status == 4 and report["code"] == "SCHEMA_INVALID", report
    assert any(d["kind"] == "StatefulSet" for d in report["invalid"])


def test_a_missing_required_value_stops_the_render(federation_dir: Federation, tmp_path: Path) -> None:
    status, report = _render(federation_dir, tmp_path, with_secret=False)
    assert status == 3 and report["code"] == "RENDER_FAILED"
    assert "federation.aggregatorYaml is required" in report["message"]


@pytest.mark.parametrize("operator", [None, "   "], ids=["unset", "blank"])
def test_a_release_that_names_no_operator_is_not_rendered(federation_dir: Federation, tmp_path: Path,
                                                          operator: str | None) -> None:
    """Starting a plan is a person's action: the chart refuses to render without the coordinator's
    name, and a blank one is no name (it was rendered, and refused only when the pod started)."""
    status, report = _render(federation_dir, tmp_path, operator=operator)
    assert status == 3 and report["code"] == "RENDER_FAILED"
    assert "operator is required" in report["message"]
