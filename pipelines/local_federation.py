"""A whole federation on this machine, as separate OS processes on loopback: one
`aggregator run` and one `silo-node run` per hospital, each from its own startup kit.
(Tests of network faults put the aggregator on another local address and run silos inside
network namespaces: see `host` and `start_silo(netns=...)`.)

Used by `make demo`, the pipelines and the end-to-end tests. Every process is started in
its own process group and the whole group is killed on exit, so nothing outlives the run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from aggregator.config import load_aggregator_config
from aggregator.enrolment import enrol_silo, plan_with_enrolled_cohort
from aggregator.provisioning import Federation, provision_federation
from healthfed_common.enrolment_request import read_request
from healthfed_common.errors import HealthFedError
from healthfed_common.plan import parse_plan
from healthfed_common.plan_cache import PlanCache
from healthfed_common.startup_kit import load_silo_config
from silo_node.enrolment import create_enrolment_request, install_certificate

Printer = Callable[[str], None]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def provision_local_federation(
    out_dir: Path,
    federation: str,
    silo_ids: list[str],
    address: str,
    *,
    listen_address: str | None = None,
    coordinator: str = "local coordinator",
    validity_days: int = 365,
) -> Federation:
    """A federation whose kits are ready to run, made the way real hospitals make theirs:
    the coordinator provisions kit skeletons, each "hospital" generates its keys inside its
    own kit (`silo_node.enrolment`), the coordinator signs the request (`aggregator.enrolment`,
    which records the signing key and audits it) and the hospital installs the certificate.
    Only this pipeline plays both roles; the private keys still exist only in the kits."""
    provisioned = provision_federation(out_dir, federation, silo_ids, address, listen_address=listen_address)
    aggregator_config = load_aggregator_config(provisioned.aggregator_config)
    for silo_id, kit in provisioned.kits.items():
        config_path = kit / "silo.yaml"
        silo_config = load_silo_config(config_path)
        written = create_enrolment_request(silo_config, config_path)
        enrolment = enrol_silo(aggregator_config, read_request(written.request_path), by=coordinator,
                               validity_days=validity_days)
        issued = kit / "issued-silo.pem"  # what the coordinator would send back
        issued.write_bytes(enrolment.certificate_pem)
        install_certificate(silo_config, issued)
        issued.unlink()
    return provisioned


@dataclass
class Member:
    name: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)


class LocalFederation:
    def __init__(self, work_dir: Path, silo_ids: list[str], *, federation: str = "local-demo",
                 printer: Printer | None = print, host: str = "127.0.0.1") -> None:
        """`host`: a local IPv4 address the aggregator listens on and the kits dial (it is
        in the aggregator's certificate; silos check the name healthfed-aggregator anyway)."""
        self.work_dir = work_dir
        self.silo_ids = list(silo_ids)
        self.port = free_port(host)
        self.address = f"{host}:{self.port}"
        self._printer = printer
        self.members: dict[str, Member] = {}
        self.federation: Federation = provision_local_federation(
            work_dir / "federation", federation, self.silo_ids, self.address)

    # -- setting up silos -------------------------------------------------------------
    def kit(self, silo_id: str) -> Path:
        return self.federation.kits[silo_id]

    def state_dir(self, silo_id: str) -> Path:
        return self.kit(silo_id) / "state"

    def plan_cache_folders(self) -> list[Path]:
        """Each node's own traced-plan cache: the aggregator's STATE_DIR/plan-cache, then every
        silo's STATE/plan-cache, in silo order."""
        config = load_aggregator_config(self.federation.aggregator_config)
        return [config.state_dir / "plan-cache"] + [self.state_dir(s) / "plan-cache" for s in self.silo_ids]

    def set_approval_policy(self, silo_id: str, policy: dict[str, Any]) -> None:
        kit = self.kit(silo_id)
        (kit / "approval-policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        config_path = kit / "silo.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["policy_file"] = "approval-policy.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def configure_silo(self, silo_id: str, **settings: Any) -> None:
        """Changes keys of the kit's silo.yaml (e.g. max_backoff_s, call_timeout_s); the silo
        validates them when it starts."""
        config_path = self.kit(silo_id) / "silo.yaml"
        config = yaml.safe_load(config_path.read_text())
        config.update(settings)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def silo_cli(self, silo_id: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs a `silo-node` subcommand against this silo's state, as hospital IT would."""
        result = subprocess.run(
            _command("silo_node.cli.main", *args, "--state-dir", str(self.state_dir(silo_id))),
            capture_output=True, text=True, env=self._env(),
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"silo-node {' '.join(args)} failed for {silo_id}:\n{result.stdout}{result.stderr}")
        return result

    def register_dataset(self, silo_id: str, name: str, export: Path, policy: dict[str, Any], kind: str = "tabular") -> str:
        policy_path = self.kit(silo_id) / f"{name}-policy.yaml"
        policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
        return self.silo_cli(silo_id, "data", "add", name, str(export), "--kind", kind, "--policy", str(policy_path)).stdout

    # -- running ------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # Commands that change a node's state record the person who ran them (--by); this
        # unattended federation names its operator once for all of them.
        env.setdefault("HEALTHFED_OPERATOR", "local federation operator")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _start(self, name: str, command: list[str]) -> Member:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self._env(),
            start_new_session=True,
        )
        member = Member(name, process)
        threading.Thread(target=self._pump, args=(member, process.stdout), daemon=True).start()
        self.members[name] = member
        return member

    def _pump(self, member: Member, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            line = line.rstrip("\n")
            member.lines.append(line)
            if self._printer and _worth_showing(member.name, line):
                self._printer(f"[{member.name}] {line}")

    def start_aggregator(self, plan_path: Path, out_dir: Path, linger_s: float = 3.0) -> Member:
        return self._start("aggregator", _command(
            "aggregator.cli.main", "run", "--config", str(self.federation.aggregator_config),
            "--plan", str(plan_path), "--out", str(out_dir), "--linger", str(linger_s),
        ))

    def start_silo(self, silo_id: str, *, exit_when_finished: bool = True, netns: str | None = None) -> Member:
        """`exit_when_finished=False` keeps the silo polling after a plan ends, so several
        plans (one aggregator process each) can run against the same silo processes.
        `netns`: run it inside that network namespace (`ip netns exec` replaces itself with
        the silo, so the member's pid is the silo's). Starting a silo again (a restart)
        replaces its member."""
        flags = ["--exit-when-finished"] if exit_when_finished else []
        command = _command("silo_node.cli.main", "run", "--config", str(self.kit(silo_id) / "silo.yaml"), *flags)
        return self._start(silo_id, (["ip", "netns", "exec", netns] if netns else []) + command)

    def wait(self, name: str, timeout_s: float) -> int:
        return self.members[name].process.wait(timeout=timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.members[name].process
        if process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for member in self.members.values():
            if member.process.poll() is None:
                try:
                    os.killpg(member.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.time() + 10
        for member in self.members.values():
            try:
                member.process.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:  # the whole group, including anything a child spawned
                os.killpg(member.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            member.process.wait(timeout=10)

    def run_report(self, out_dir: Path) -> dict[str, Any]:
        return json.loads((out_dir / "run-report.json").read_text())


def seed_plan_caches(federation: LocalFederation, plan_path: Path, traced_dir: Path) -> Path | None:
    """Traces the plan the aggregator will offer ONCE, into `traced_dir` (by
    `build_federated_computations` itself, so in a fresh tracer process as every node does),
    and copies the verified cache entry into the aggregator's and every silo's OWN plan-cache
    folder (0700 folder, 0600 file, as a node writes them). A secure-aggregation plan gets the
    enrolled cohort first, as `aggregator run` does, so the key is the one the nodes compute.

    Why: on two shared cores, N nodes tracing the same plan at once cost minutes, and what a
    pipeline measures often does not depend on who traced the graphs. Nothing is trusted that a
    node would not check after its own trace: each node still loads the entry through its own
    cache (key, HealthFed source digests, payload digest, recorded fingerprint) and compares the
    fingerprint of what it loaded with its peer's -- exactly what a restarted node does.

    Returns the entry copied, or None (nothing seeded, the nodes trace themselves) when the
    plan cannot be traced here, e.g. a plan the aggregator will refuse."""
    from healthfed_common.learning_process import build_federated_computations  # imports TensorFlow

    config = load_aggregator_config(federation.federation.aggregator_config)
    try:
        plan = plan_with_enrolled_cohort(config, parse_plan(plan_path.read_bytes()), say=lambda line: None)
        cache = PlanCache(traced_dir)
        if cache.load(plan) is None:
            build_federated_computations.cache_clear()  # a memo of this process must not skip the store
            build_federated_computations(plan, traced_dir)
        entry = cache.path(plan)
        if not entry.is_file():
            return None
    except (HealthFedError, OSError, RuntimeError):
        return None
    for folder in federation.plan_cache_folders():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(entry, folder / entry.name)
        os.chmod(folder / entry.name, 0o600)
    return entry


def _worth_showing(name: str, line: str) -> bool:
    if name == "aggregator":
        return not line.startswith("20") or " ERROR " in line or " WARNING " in line
    return " WARNING " in line or " ERROR " in line or "refus" in line or "round" in line and "trained" in line


@contextmanager
def local_federation(work_dir: Path, silo_ids: list[str], **kwargs: Any) -> Iterator[LocalFederation]:
    federation = LocalFederation(work_dir, silo_ids, **kwargs)
    try:
        yield federation
    finally:
        federation.stop_all()
