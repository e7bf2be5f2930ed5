#!/usr/bin/env python3
"""Builds the HealthFed images and runs the containerised three-hospital federation end to end.

    python deploy/test/container_smoke.py images   # `make images`: base, silo, aggregator
    python deploy/test/container_smoke.py smoke    # `make test-containers`: images + the runbook

Why a driver and not a list of shell lines in the Makefile: the runbook in deploy/README.md is
the documentation hospital IT follows, so this script runs *those* fenced `bash runbook` blocks
as written (never a private copy of them) and checks what the README promises around them:
preflight refusals, read-only data, non-root and read-only containers, health, a silo restarted
mid-plan keeping its state, one privacy charge per round, nothing left after `down -v`.

Engine: podman where installed (docker CLIs without a reachable daemon are common), else a
docker whose daemon answers. With podman, a `docker` shim on PATH stands in for the README's
`docker` commands and runs `docker compose` as podman-compose with what podman-compose 1.0.3
lacks (the file's `name:` as project, `down -v` removing the declared volumes and the project
network, as `docker compose down -v` does). Nothing is installed here (that is .ci/run's job);
with no registry reachable the Debian base is made with mmdebstrap. Any failure exits non-zero
with one line naming the step: a machine that cannot run containers fails, it never skips.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TAG = "0.1.0"
IMAGES = {"base": f"healthfed/base:{TAG}", "silo": f"healthfed/silo-node:{TAG}",
          "aggregator": f"healthfed/aggregator:{TAG}"}
DOCKERFILES = {"base": DEPLOY / "base.Dockerfile", "silo": DEPLOY / "silo" / "Dockerfile",
               "aggregator": DEPLOY / "aggregator" / "Dockerfile"}
LOCAL_BASE = "localhost/debian-bookworm-python:3.11"
MMDEBSTRAP_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates,passwd"
# A smaller base (129 MB instead of 225 MB, measured): merged /usr set up by mmdebstrap's hook
# rather than by the usrmerge package, which pulls in perl (~50 MB); no documentation, manual
# pages or translations (the packages' copyright files stay).
MMDEBSTRAP_OPTIONS = ("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                      "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                      "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
                      "--dpkgopt=path-exclude=/usr/share/locale/*")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SILOS = ("st-marys", "riverside", "hillcrest")
PROJECT = "healthfed"
ROUNDS = 3
HARD = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]


class SmokeFailed(Exception):
    """One failed step: a stable code and a sentence naming what did not hold."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    print(f"[container-smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Engine:
    """The container engine and the environment its commands need."""

    name: str  # podman | docker
    env: dict[str, str]
    shim_dir: Path | None = None
    timings: dict[str, Any] = field(default_factory=dict)

    def cmd(self, *args: str, check: bool = True, capture: bool = True, timeout: float = 1800,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.name, *args], env=self.env, text=True, timeout=timeout, input=input_text,
                                capture_output=capture, check=False)
        if check and result.returncode != 0:
            detail = ((result.stderr or "") + (result.stdout or ""))[-3000:] if capture else ""
            raise SmokeFailed("ENGINE_COMMAND_FAILED", f"`{self.name} {' '.join(args)[:300]}` exited "
                                                       f"{result.returncode}:\n{detail}")
        return result

    def image_ref(self, role: str) -> str:
        return IMAGES[role] if self.name == "docker" else f"localhost/{IMAGES[role]}"


# --- engine ------------------------------------------------------------------------------
def _containers_conf(work: Path) -> Path:
    """podman here: runc (crun refuses hybrid cgroups), ulimits within this shell's hard
    limits (no CAP_SYS_RESOURCE to raise them), no systemd (cgroupfs, file events)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = hard if hard != resource.RLIM_INFINITY else 1048576
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = min(32768, nproc_hard if nproc_hard != resource.RLIM_INFINITY else 32768)
    runtime = 'runtime = "runc"\n' if shutil.which("runc") else ""
    path = work / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n" + runtime + 'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    return path


SHIM = r'''#!/bin/sh
# `docker` for the README runbook, run by podman (written by deploy/test/container_smoke.py)
if [ "$1" = compose ]; then
    shift
    exec "@PYTHON@" "@DRIVER@" compose-shim "$@"
fi
# `docker volume create NAME` succeeds when NAME exists; podman 4.3's refuses
if [ "$#" -eq 3 ] && [ "$1" = volume ] && [ "$2" = create ] && podman volume exists "$3"; then
    echo "$3"
    exit 0
fi
exec podman "$@"
'''


def detect_engine(work: Path) -> Engine:
    env = dict(os.environ)
    if shutil.which("podman"):
        if "CONTAINERS_CONF" not in env:
            env["CONTAINERS_CONF"] = str(_containers_conf(work))
        shim = work / "bin"
        shim.mkdir(exist_ok=True)
        (shim / "docker").write_text(SHIM.replace("@PYTHON@", sys.executable).replace("@DRIVER@", str(Path(__file__).resolve())))
        (shim / "docker").chmod(0o755)
        if not shutil.which("sudo"):  # the runbook's `sudo chown`; this runs as root already
            (shim / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
            (shim / "sudo").chmod(0o755)
        env["PATH"] = f"{shim}:{env.get('PATH', '')}"
        if not shutil.which("podman-compose"):
            raise SmokeFailed("COMPOSE_MISSING", "podman is installed but podman-compose is not "
                                                 "(apt-get install podman-compose; .ci/run installs it)")
        engine = Engine("podman", env, shim)
    elif shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0:
        engine = Engine("docker", env)
    else:
        raise SmokeFailed("NO_CONTAINER_ENGINE", "neither podman nor a docker with a reachable daemon is available; "
                                                 "install podman, buildah, runc, mmdebstrap and podman-compose "
                                                 "(.ci/run does so with apt-get as root)")
    log(f"engine: {engine.name} ({engine.cmd('--version').stdout.strip()})")
    return engine


def _registry_reachable() -> bool:
    try:
        with socket.create_connection(("registry-1.docker.io", 443), timeout=5):
            return True
    except OSError:
        return False


def choose_base(engine: Engine, work: Path) -> str | None:
    """The Python base for deploy/base.Dockerfile: $HEALTHFED_BASE_IMAGE; else a local Debian
    base made earlier; else the Dockerfile's digest-pinned default when a registry answers;
    else a local base made now with mmdebstrap (no registry needed, Debian mirror only)."""
    if os.environ.get("HEALTHFED_BASE_IMAGE"):
        return os.environ["HEALTHFED_BASE_IMAGE"]
    if engine.name == "podman" and engine.cmd("image", "exists", LOCAL_BASE, check=False).returncode == 0:
        log(f"base: {LOCAL_BASE} (made earlier with mmdebstrap)")
        return LOCAL_BASE
    if _registry_reachable():
        log("base: the pinned python:3.11-slim-bookworm digest (registry reachable)")
        return None
    if engine.name != "podman" or not shutil.which("mmdebstrap"):
        raise SmokeFailed("NO_BASE_IMAGE", "no registry is reachable and mmdebstrap/podman are missing to make a "
                                           "local Debian base; install mmdebstrap (.ci/run does)")
    log("base: no registry reachable; making a Debian bookworm base with mmdebstrap (~1 min)")
    started = time.time()
    rootfs = work / "rootfs.tar"
    result = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={MMDEBSTRAP_PACKAGES}", *MMDEBSTRAP_OPTIONS,
                             "bookworm", str(rootfs)], capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise SmokeFailed("BASE_BOOTSTRAP_FAILED", f"mmdebstrap failed:\n{result.stderr[-2000:]}")
    engine.cmd("import", str(rootfs), LOCAL_BASE)
    rootfs.unlink()
    engine.timings["base_bootstrap_s"] = round(time.time() - started, 1)
    return LOCAL_BASE


def build(engine: Engine, role: str, base_image: str | None, extra: tuple[str, ...] = ()) -> float:
    args = ["build", "--tag", IMAGES[role], "--file", str(DOCKERFILES[role])]
    if engine.name == "podman":
        args += ["--format", "docker", "--layers", "--ignorefile", f"{DOCKERFILES[role]}.dockerignore"]
        if HOST_CA_BUNDLE.exists():  # pip inside the build trusts what the host trusts
            args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    if role == "base" and base_image:
        args += ["--build-arg", f"BASE_IMAGE={base_image}"]
    if role != "base":
        args += ["--build-arg", f"HEALTHFED_BASE={engine.image_ref('base')}"]
    started = time.time()
    engine.cmd(*args, *extra, str(REPO), timeout=3600)
    return round(time.time() - started, 1)


def build_images(engine: Engine, work: Path) -> dict[str, Any]:
    base_image = choose_base(engine, work)
    existed = {role: engine.cmd("image", "inspect", engine.image_ref(role), check=False).returncode == 0
               for role in ("base", "silo", "aggregator")}
    first: dict[str, float] = {}
    for role in ("base", "silo", "aggregator"):
        log(f"building {IMAGES[role]}")
        first[role] = build(engine, role, base_image)
        log(f"  {IMAGES[role]}: {first[role]} s")
    cached = {role: build(engine, role, base_image) for role in ("base", "silo", "aggregator")}
    # a code change: the role layers rebuild from the (unchanged) base image
    code_change = {role: build(engine, role, base_image, ("--no-cache",)) for role in ("silo", "aggregator")}
    sizes = {role: int(engine.cmd("image", "inspect", "--format", "{{.Size}}", engine.image_ref(role)).stdout.strip())
             for role in IMAGES}
    for role, size in sizes.items():
        log(f"  {IMAGES[role]}: {size / 1e9:.2f} GB")
    return {"engine": engine.name, "base_image": base_image or "Dockerfile default (digest-pinned)",
            "build_s": first, "image_existed_before_build": existed,
            "cached_build_s": cached, "code_change_rebuild_s": code_change,
            "size_bytes": sizes, **engine.timings}


# --- the runbook -------------------------------------------------------------------------
def runbook_blocks(readme: Path = DEPLOY / "README.md") -> list[str]:
    """The fenced ```bash runbook blocks of deploy/README.md, in order."""
    blocks = re.findall(r"^```bash runbook\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    if len(blocks) < 5:
        raise SmokeFailed("RUNBOOK_MISSING", f"{readme} has {len(blocks)} `bash runbook` blocks; expected the runbook")
    return blocks


def run_block(engine: Engine, block: str, cwd: Path, index: int) -> None:
    log(f"runbook step {index + 1}: {block.strip().splitlines()[0][:100]}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=engine.env, text=True,
                            capture_output=True, timeout=1800, check=False)
    (cwd / f"runbook-step-{index + 1}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SmokeFailed("RUNBOOK_STEP_FAILED", f"runbook step {index + 1} exited {result.returncode}:\n"
                                                 f"{(result.stdout + result.stderr)[-3000:]}")


def prepare_inputs(work: Path) -> None:
    """What the runbook expects in its folder: per-hospital synthetic exports (with identifiers)
    and dataset policies, the stewards' approval policy, the plan (secure aggregation + DP)."""
    import yaml

    from pipelines.demo import APPROVAL_POLICY, DATASET_POLICY, demo_plan
    from pipelines.synthetic_ehr import write_demo_exports

    shutil.copy(DEPLOY / "compose" / "docker-compose.yaml", work / "docker-compose.yaml")
    exports = write_demo_exports(work / "exports")
    for silo in SILOS:
        data = work / "data" / silo
        data.mkdir(parents=True)
        shutil.copy(exports[silo], data / "export.csv")
        (data / "policy.yaml").write_text(yaml.safe_dump(DATASET_POLICY, sort_keys=False))
        for path in (data, data / "export.csv", data / "policy.yaml"):
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(work / "exports")
    (work / "approval-policy.yaml").write_text(yaml.safe_dump(APPROVAL_POLICY, sort_keys=False))
    plan = demo_plan(ROUNDS)
    plan["name"] = "plan"
    plan["secure_aggregation"] = {"protocol": "secagg", "threshold": 2}  # tolerates the restarted silo
    (work / "plans").mkdir()
    (work / "plans" / "plan.json").write_text(json.dumps(plan, indent=2))


# --- checks around the runbook -----------------------------------------------------------
def _silo_run(engine: Engine, work: Path, silo: str, *args: str, kit: Path | None = None,
              data: Path | None = None, data_mode: str = "ro", entry: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return engine.cmd("run", "--rm", *HARD, "-v", f"{kit or work / 'federation' / 'kits' / silo}:/kit:ro",
                      "-v", f"{data or work / 'data' / silo}:/data:{data_mode}", "-v", f"{PROJECT}_{silo}-state:/state",
                      *entry, engine.image_ref("silo"), *args, check=False, timeout=600)


def check_refusals(engine: Engine, work: Path) -> dict[str, Any]:
    """Preflight (`--check`) of both roles with good mounts, then the refusals the README lists."""
    found: dict[str, Any] = {}
    fed = work / "federation"
    silo = SILOS[0]
    ok = _silo_run(engine, work, silo, "--check")
    if ok.returncode != 0 or "would exec: silo-node run" not in ok.stdout:
        raise SmokeFailed("PREFLIGHT_FAILED", f"silo --check with a good kit failed:\n{ok.stderr[-2000:]}")
    aggregator_mounts = ["-v", f"{fed / 'aggregator' / 'aggregator.yaml'}:/federation/aggregator.yaml:ro",
                         *[arg for name in ("ca.pem", "server.pem", "server.key")
                           for arg in ("-v", f"{fed / 'aggregator' / name}:/federation/{name}:ro")],
                         "-v", f"{fed / 'aggregator' / 'enrolled'}:/federation/enrolled:ro",
                         "-v", f"{work / 'plans'}:/plans:ro"]
    agg = engine.cmd("run", "--rm", *HARD, *aggregator_mounts, "-e", "HEALTHFED_OPERATOR=C. Lee",
                     engine.image_ref("aggregator"), "--check", check=False, timeout=600)
    if agg.returncode != 0 or "would exec: aggregator run" not in agg.stdout or "warning" in agg.stderr:
        raise SmokeFailed("PREFLIGHT_FAILED", f"aggregator --check failed:\n{agg.stdout}{agg.stderr[-2000:]}")

    def expect(name: str, result: subprocess.CompletedProcess[str], status: int, code: str) -> None:
        if result.returncode != status or f"[{code}]" not in result.stderr:
            raise SmokeFailed("REFUSAL_MISSING", f"{name}: expected exit {status} [{code}], got {result.returncode}:\n"
                                                 f"{result.stderr[-1500:]}")
        found[name] = {"exit": status, "code": code}
        log(f"  refused as expected: {name} -> exit {status} [{code}]")

    expect("aggregator started by nobody",  # a plan run names the coordinator who starts it
           engine.cmd("run", "--rm", *HARD, *aggregator_mounts, engine.image_ref("aggregator"), "--check",
                      check=False, timeout=600), 11, "OPERATOR_REQUIRED")
    empty = work / "no-kit"
    empty.mkdir(exist_ok=True)
    expect("silo without a kit", _silo_run(engine, work, silo, "--check", kit=empty), 3, "KIT_MISSING")
    broken = work / "kit-copies"
    for case, mutate, status, code in (
        ("silo key readable by others", lambda k: (k / "silo.key").chmod(0o644), 9, "KEY_PERMISSIONS"),
        ("CA key mounted into the silo", lambda k: shutil.copy2(fed / "aggregator" / "ca.key", k / "ca-backup.pem"),
         10, "CA_KEY_MOUNTED"),
    ):
        kit = broken / case.replace(" ", "-")
        shutil.copytree(fed / "kits" / silo, kit, symlinks=True)
        mutate(kit)
        subprocess.run(["chown", "-R", "10001:10001", str(kit)], check=True)
        expect(case, _silo_run(engine, work, silo, "--check", kit=kit), status, code)
    # exports the container user could write to, mounted without :ro
    writable = broken / "writable-data"
    shutil.copytree(work / "data" / silo, writable)
    subprocess.run(["chown", "-R", "10001:10001", str(writable)], check=True)
    expect("writable data mount", _silo_run(engine, work, silo, "--check", data=writable, data_mode="rw"), 7,
           "DATA_NOT_READ_ONLY")
    shutil.rmtree(broken)
    return found


def inert_worker_binary(engine: Engine) -> str:
    """TFF's unauthenticated worker is not in the images: an empty, non-executable placeholder
    (TFF checks only that the file exists) stands where the 294 MB server was."""
    path = "/opt/venv/lib/python3.11/site-packages/tensorflow_federated/data/worker_binary"
    found = engine.cmd("run", "--rm", *HARD, "--entrypoint", "stat", engine.image_ref("silo"), "-c", "%s %a",
                       path).stdout.strip()
    if found != "0 444":
        raise SmokeFailed("WORKER_BINARY_PRESENT", f"{path} in the silo image: size and mode {found!r}, expected '0 444'")
    return found


def compose_containers(engine: Engine) -> dict[str, str]:
    out = engine.cmd("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format",
                     '{{.Names}} {{index .Labels "com.docker.compose.service"}}').stdout
    return {service: name for name, service in (line.split() for line in out.splitlines() if line.strip())}


def healthy(engine: Engine, container: str) -> bool:
    if engine.name == "podman":
        return engine.cmd("healthcheck", "run", container, check=False, timeout=120).returncode == 0
    status = engine.cmd("inspect", "--format", "{{.State.Health.Status}}", container, check=False).stdout.strip()
    return status == "healthy"


def wait_healthy(engine: Engine, containers: dict[str, str], deadline_s: float, started: float) -> float:
    """Seconds from `compose up` until every service's health check passed."""
    pending = set(containers)
    while pending:
        for service in sorted(pending):
            if healthy(engine, containers[service]):
                pending.discard(service)
                log(f"  {service}: healthy after {time.time() - started:.0f} s")
        if pending and time.time() - started > deadline_s:
            raise SmokeFailed("UNHEALTHY", f"not healthy within {deadline_s:.0f} s: {sorted(pending)}")
        if pending:
            time.sleep(3)
    return round(time.time() - started, 1)


def container_facts(engine: Engine, container: str) -> dict[str, Any]:
    """Non-root, read-only root filesystem, no capabilities, data mount not writable: asked
    of the running container itself, not of the compose file."""
    inspect = json.loads(engine.cmd("inspect", container).stdout)[0]
    host = inspect["HostConfig"]
    status = engine.cmd("exec", container, "sh", "-c",
                        "id -u; grep CapEff /proc/self/status; touch /data/x 2>&1; echo data=$?; "
                        "touch /opt/x 2>&1; echo root=$?", check=False).stdout
    facts = {
        "uid": status.splitlines()[0].strip(),
        "cap_eff": re.search(r"CapEff:\s*(\S+)", status).group(1) if "CapEff" in status else None,
        "data_write_refused": "data=1" in status,
        "root_write_refused": "root=1" in status,
        "read_only_rootfs": bool(host.get("ReadonlyRootfs")),
        "cap_drop": host.get("CapDrop"),
    }
    if facts["uid"] != "10001" or facts["cap_eff"] != "0000000000000000" or not facts["data_write_refused"] \
            or not facts["root_write_refused"] or not facts["read_only_rootfs"]:
        raise SmokeFailed("HARDENING_MISSING", f"{container}: {facts}")
    return facts


def aggregator_log(engine: Engine, container: str) -> str:
    result = engine.cmd("logs", container, check=False)
    return result.stdout + result.stderr


def wait_for(engine: Engine, container: str, pattern: str, deadline_s: float) -> str:
    started = time.time()
    while time.time() - started < deadline_s:
        text = aggregator_log(engine, container)
        if re.search(pattern, text):
            return text
        if re.search(r"aggregator run: (refused|plan|\w+ failed)|Traceback", text):
            raise SmokeFailed("PLAN_FAILED", f"the aggregator stopped:\n{text[-3000:]}")
        time.sleep(3)
    raise SmokeFailed("PLAN_TIMEOUT", f"no {pattern!r} within {deadline_s:.0f} s:\n{aggregator_log(engine, container)[-3000:]}")


def leftovers(engine: Engine) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    containers = engine.cmd("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()
    volumes = [v for v in engine.cmd("volume", "ls", "--format", "{{.Name}}").stdout.split() if v.startswith(f"{PROJECT}_")]
    networks = [n for n in engine.cmd("network", "ls", "--format", "{{.Name}}").stdout.split() if n.startswith(f"{PROJECT}_")]
    return {k: v for k, v in {"containers": containers, "volumes": volumes, "networks": networks}.items() if v}


def smoke(engine: Engine, work: Path, images: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    if leftovers(engine):
        raise SmokeFailed("PROJECT_IN_USE", f"a {PROJECT} compose project already exists here: {leftovers(engine)}; "
                                            "remove it first (docker compose down -v)")
    folder = work / PROJECT  # podman-compose names the project after the folder as well
    folder.mkdir()
    prepare_inputs(folder)
    engine.env["HEALTHFED_PUBLISH_PORT"] = str(_free_port())  # never collide with a host's 50051
    blocks = runbook_blocks()
    result: dict[str, Any] = {}
    try:
        for index in range(4):  # provision, hospitals' keys, signing, certificates installed
            run_block(engine, blocks[index], folder, index)
        run_block(engine, blocks[4], folder, 4)  # check + data add (read-only /data) + budget
        result["refusals"] = check_refusals(engine, folder)
        result["worker_binary"] = inert_worker_binary(engine)
        up = time.time()
        run_block(engine, blocks[5], folder, 5)  # compose up
        containers = compose_containers(engine)
        if set(containers) != {"aggregator", *SILOS}:
            raise SmokeFailed("COMPOSE_FAILED", f"compose started {containers}")
        result["start_to_healthy_s"] = wait_healthy(engine, containers, 600, up)
        result["hardening"] = {s: container_facts(engine, c) for s, c in containers.items() if s != "aggregator"}
        aggregator = containers["aggregator"]
        wait_for(engine, aggregator, rf"round 1/{ROUNDS}:", 900)
        log("round 1 done: restarting the st-marys silo container mid-plan")
        before = engine.cmd("inspect", "--format", "{{.State.StartedAt}}", containers["st-marys"]).stdout.strip()
        engine.cmd("restart", containers["st-marys"], timeout=300)
        after = engine.cmd("inspect", "--format", "{{.State.StartedAt}}", containers["st-marys"]).stdout.strip()
        if after == before:
            raise SmokeFailed("RESTART_FAILED", f"st-marys was not restarted (started at {before} both times)")
        result["restarted_mid_plan"] = {"silo": "st-marys", "started_at_before": before, "started_at_after": after}
        text = wait_for(engine, aggregator, r"run report|evaluat|model exported|rounds completed|"
                                            rf"round {ROUNDS}/{ROUNDS}:", 1500)
        deadline = time.time() + 600
        while engine.cmd("exec", aggregator, "test", "-f", "/state/runs/plan/run-report.json",
                         check=False).returncode != 0:
            if time.time() > deadline:
                raise SmokeFailed("PLAN_TIMEOUT", f"no run report:\n{aggregator_log(engine, aggregator)[-3000:]}")
            time.sleep(3)
        report = json.loads(engine.cmd("exec", aggregator, "cat", "/state/runs/plan/run-report.json").stdout)
        result["federation_s"] = round(time.time() - up, 1)
        result["rounds_completed"] = report.get("rounds_completed")
        result["secure_aggregation"] = report.get("secure_aggregation_details", {}).get("protocol") \
            if isinstance(report.get("secure_aggregation_details"), dict) else report.get("secure_aggregation")
        if report.get("rounds_completed") != ROUNDS:
            raise SmokeFailed("PLAN_INCOMPLETE", f"rounds_completed={report.get('rounds_completed')}:\n{text[-2000:]}")
        result["aggregator_progress"] = [line for line in text.splitlines() if re.match(r"round \d+/", line)]
        run_block(engine, blocks[6], folder, 6)  # stop, ledgers, down -v
        result["ledger_charges"] = check_ledgers(folder)
    finally:
        remaining = leftovers(engine)
        if remaining:
            subprocess.run([str(engine.shim_dir / "docker") if engine.shim_dir else "docker", "compose", "down", "-v"],
                           cwd=folder, env=engine.env, capture_output=True, check=False)
    if remaining:
        raise SmokeFailed("LEFTOVERS", f"after `docker compose down -v`: {remaining}")
    result["leftovers_after_down"] = {}
    result["smoke_wall_s"] = round(time.time() - started, 1)
    return result


def check_ledgers(folder: Path) -> dict[str, Any]:
    """One charge per round and per silo, including the silo restarted mid-plan."""
    found: dict[str, Any] = {}
    for silo in SILOS:
        ledger = json.loads((folder / f"ledger-{silo}.json").read_text())
        charges = [c for d in _datasets(ledger) for c in d.get("charges", []) if c.get("kind", "charge") == "charge"]
        rounds = [c.get("round") for c in charges if c.get("round") is not None]
        found[silo] = {"charges": len(charges), "rounds": rounds}
        if len(rounds) != len(set(rounds)) or len(charges) != ROUNDS:
            raise SmokeFailed("LEDGER_WRONG", f"{silo}: expected one charge per round ({ROUNDS}); ledger: "
                                              f"{json.dumps(ledger)[:2000]}")
    return found


def _datasets(ledger: Any) -> list[dict[str, Any]]:
    if isinstance(ledger, dict) and isinstance(ledger.get("datasets"), list):
        return ledger["datasets"]
    if isinstance(ledger, dict) and isinstance(ledger.get("datasets"), dict):
        return list(ledger["datasets"].values())
    if isinstance(ledger, list):
        return ledger
    return [ledger]


def _cold_builds(images: dict[str, Any], previous: Path, now: str) -> dict[str, Any]:
    """A build from nothing happens only when an image did not exist: such a run's times are
    recorded as cold; otherwise the last cold figures (and when they were taken) are kept."""
    try:
        kept = json.loads(previous.read_text())["images"].get("cold_build_s", {})
    except (OSError, ValueError, KeyError):
        kept = {}
    for role, was_there in images["image_existed_before_build"].items():
        if not was_there:
            kept[role] = {"seconds": images["build_s"][role], "measured_at": now}
    return kept


def _size_history(images: dict[str, Any], previous: Path, now: str) -> list[dict[str, Any]]:
    """Each distinct set of image sizes measured here, oldest first (entries carried over as they
    are, notes included), so a change in size stays visible beside the figures it replaced. A new
    entry is added when some image differs by more than 1% from the last one."""
    try:
        old = json.loads(previous.read_text())
        history = list(old.get("images", {}).get("size_history") or
                       [{"measured_at": old["measured_at"], "size_bytes": old["images"]["size_bytes"]}])
    except (OSError, ValueError, KeyError):
        history = []
    last = history[-1]["size_bytes"] if history else {}
    sizes = images["size_bytes"]
    if any(role not in last or abs(size - last[role]) > 0.01 * last[role] for role, size in sizes.items()):
        history.append({"measured_at": now, "size_bytes": sizes})
    return history


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- `docker compose` for podman ------------------------------------------------------------
def compose_shim(args: list[str]) -> int:
    """`docker compose ARGS` run by podman-compose 1.0.3, with the two things it lacks."""
    import yaml

    document = yaml.safe_load(Path("docker-compose.yaml").read_text())
    project = document.get("name") or Path.cwd().name
    status = subprocess.run(["podman-compose", "-p", project, *args], check=False).returncode
    if args[:1] == ["down"] and status == 0:
        for network in document.get("networks", {}) or {}:
            subprocess.run(["podman", "network", "rm", "-f", f"{project}_{network}"], capture_output=True, check=False)
        if "-v" in args or "--volumes" in args:
            for volume in document.get("volumes", {}) or {}:
                subprocess.run(["podman", "volume", "rm", "-f", f"{project}_{volume}"], capture_output=True, check=False)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compose-shim"]:
        return compose_shim(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["images", "smoke"])
    parser.add_argument("--bench-out", type=Path, default=REPO / "bench-results" / "images.json")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder (logs, ledgers)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="healthfed-containers-"))
    work.chmod(0o755)
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    succeeded = False
    try:
        engine = detect_engine(work)
        images = build_images(engine, work)
        record: dict[str, Any] = {"images": images}
        if args.command == "smoke":
            record["smoke"] = smoke(engine, work, images)
        record["total_s"] = round(time.time() - started, 1)
        record["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record["cpus"] = os.cpu_count()
        record["command"] = f"make {'test-containers' if args.command == 'smoke' else 'images'} " \
                            f"(python deploy/test/container_smoke.py {args.command})"
        # the load matters on a shared 2-core machine: build and round times move with it
        record["machine"] = {"cpus": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
                             "python": platform.python_version(),
                             "load_average_1_5_15": {"at_start": load_at_start,
                                                     "at_end": [round(x, 2) for x in os.getloadavg()]}}
        if args.command == "smoke":
            record["images"]["cold_build_s"] = _cold_builds(images, args.bench_out, record["measured_at"])
            record["images"]["size_history"] = _size_history(images, args.bench_out, record["measured_at"])
            args.bench_out.parent.mkdir(parents=True, exist_ok=True)
            args.bench_out.write_text(json.dumps(record, indent=2) + "\n")
            log(f"wrote {args.bench_out}")
        log(f"ok: {args.command} in {record['total_s']} s")
        succeeded = True
        return 0
    except SmokeFailed as failure:
        print(f"container-smoke FAILED [{failure.code}]: {failure}", file=sys.stderr)
        print(f"container-smoke: logs in {work}", file=sys.stderr)
        return 1
    finally:
        if succeeded and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
