"""Load benchmark: many silo processes, many rounds, one machine (a script, not a test).

    .venv/bin/python benchmarks/load_bench.py [--silos 20] [--rounds 20] [--secure-aggregation none secagg]
                                              [--plan-cache cold warm] [--previous OLD.json]

A real federation on loopback (pipelines.local_federation): one `aggregator run` and one
`silo-node run` per synthetic hospital, each from its own startup kit, mutual TLS, every
hospital's export registered through `silo-node data add` (de-identification, minimisation).
The model is a logistic regression on the demo's nine clinical features; every round needs
all silos (min_silos_per_round = silos), so a round's time is the slowest silo's.

The hospitals are provisioned and registered once; each secure-aggregation setting then runs
twice, one after the other, each time on freshly started processes (aggregator and silos):
* cold: every node's traced-plan cache folder is emptied first, so every node traces the plan
  itself in a fresh process (all 21 at once with 20 silos): what a brand-new plan costs;
* warm: a second plan with the same computations (only its name differs, so its plan hash and
  cache key differ) whose verified cache entry is already in every node's OWN plan-cache folder
  when the nodes start (`pipelines.local_federation.seed_plan_caches`: this script traces it
  once, in a fresh tracer process, and copies the entry; timed separately, outside the run).
  Each node loads it through its own cache -- key, source digests, payload digest, recorded
  fingerprint -- and the silos still compare its fingerprint with the aggregator's: what a
  restarted node, or any node after its first start of a plan, costs. Whether a node traced
  anyway (a rejected entry) is recorded from the processes seen (`nodes_that_traced`).
Measured per run:
* wall time of the federated run (aggregator start to exit: computation tracing, silos
  connecting, the rounds, the held-out evaluation and the model export); set-up
  (provisioning and dataset registration) is timed once, separately;
* per-round seconds (median / p95 / max) from the run report: a round is offer -> collect ->
  (secure sum) -> aggregate -> update -> metrics release -> checkpoint; rounds per minute over
  the rounds alone and over the whole run;
* memory: every process of the federation and its children (the fresh process that
  `build_federated_computations` spawns to trace the plan) is sampled every
  `--sample-interval` seconds from /proc/<pid>/status; a process's peak is its VmHWM at its last
  sample (the kernel's high-water mark, so short spikes between samples are included), and
  the federation's peak is the largest sum of VmRSS over all its processes in one sample.

Writes bench-results/load.json with the figures, the exact command and the machine, including
the load average: this machine is shared with other jobs, so times are upper bounds. The file is
rewritten after every run (`complete` says whether all ran), and `comparison` sets round 1
cold, round 1 warm and their ratio side by side per setting. `previous` holds the figures of
the file being replaced (--previous, default the existing --out), so old and new sit together.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import shlex
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import psutil

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # this process traces the warm plans (seed_plan_caches)

from pipelines.demo import DATASET, DATASET_POLICY, DEMO_FEATURES  # noqa: E402
from pipelines.machine_info import cpu_model  # noqa: E402
from pipelines.local_federation import LocalFederation, local_federation, seed_plan_caches  # noqa: E402
from pipelines.synthetic_ehr import LABEL, HospitalProfile, generate_export  # noqa: E402

APPROVAL_POLICY: dict[str, Any] = {
    "auto_approve": True,
    "allowed_models": ["logistic_regression"],
    "require_dp": False,
    "require_secure_aggregation": False,
}


def hospitals(count: int, seed: int = 17) -> list[HospitalProfile]:
    """Small hospitals of different sizes and case mix (120-400 patients each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        HospitalProfile(
            silo_id=f"hospital-{index:02d}", name=f"Load Test Hospital {index}",
            patients=int(rng.integers(120, 401)), mean_age=float(rng.uniform(48, 68)),
            smoker_rate=float(rng.uniform(0.12, 0.32)), diabetes_rate=float(rng.uniform(0.08, 0.24)),
            zip_prefix=f"{100 + index:03d}",
        )
        for index in range(count)
    ]


def load_plan(silos: int, rounds: int, protocol: str, name_suffix: str = "") -> dict[str, Any]:
    """`name_suffix` gives a plan with the same computations another hash (the warm run's)."""
    return {
        "name": f"load-{silos}x{rounds}-{protocol}{name_suffix}",
        "dataset": DATASET,
        "model": {"id": "logistic_regression"},
        "features": DEMO_FEATURES,
        "label": {"name": LABEL, "positive_values": ["1"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.2},
        "server_optimizer": {"name": "sgd", "learning_rate": 1.0},
        "local_epochs": 1,
        "batch_size": 32,
        "rounds": rounds,
        "min_silos_per_round": silos,
        # Generous: on two shared cores, 20 silos each running a TF session one after another
        # can take minutes per round; a timed-out round would measure the deadline, not the load.
        "round_deadline_s": 1800,
        # every round needs every silo, so the secure sum needs them all too: a plan's threshold may
        # not be below min_silos_per_round (the default, floor(2n/3) + 1, is for partial rounds)
        "secure_aggregation": {"protocol": protocol} | ({"threshold": silos} if protocol != "none" else {}),
        "seeds": {"model_init": 11, "data_order": 5},
    }


# -- memory sampling --------------------------------------------------------------------------
def _status_kib(pid: int) -> dict[str, int] | None:
    """VmHWM, VmRSS and RssAnon in KiB, or None once the process is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmHWM:", "VmRSS:", "RssAnon:")):
            name, number, _unit = line.split()
            values[name[:-1]] = int(number)
    return values if len(values) == 3 else None  # a zombie has no memory lines


def mem_available_kib() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


@dataclass
class ProcessPeak:
    member: str
    pid: int
    role: str  # "main" or "child"
    command: str
    hwm_kib: int = 0
    anon_kib: int = 0


@dataclass
class MemorySampler:
    """Samples every federation process and its descendants until stopped. Sets `exhausted`
    when the machine's MemAvailable falls below `floor_kib`, so the run can stop before the
    kernel's OOM killer picks a victim among other people's processes."""

    federation: LocalFederation
    interval_s: float
    floor_kib: int
    peaks: dict[int, ProcessPeak] = field(default_factory=dict)
    total_rss_peak_kib: int = 0
    total_anon_peak_kib: int = 0
    total_anon_peak_at_s: float = 0.0
    available_min_kib: int = 0
    load_max: float = 0.0
    samples: int = 0
    exhausted: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def start(self) -> None:
        self._started = time.time()
        self.available_min_kib = mem_available_kib()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        total_rss = total_anon = 0
        for name, member in list(self.federation.members.items()):
            pids = [(member.process.pid, "main")]
            try:
                pids += [(child.pid, "child") for child in psutil.Process(member.process.pid).children(recursive=True)]
            except psutil.Error:
                pass
            for pid, role in pids:
                status = _status_kib(pid)
                if status is None:
                    continue
                total_rss += status["VmRSS"]
                total_anon += status["RssAnon"]
                peak = self.peaks.get(pid)
                if peak is None:
                    peak = self.peaks[pid] = ProcessPeak(name, pid, role, _command(pid))
                elif role == "child":
                    # a child first seen between fork and exec shows its parent's command line
                    peak.command = _command(pid)
                peak.hwm_kib = max(peak.hwm_kib, status["VmHWM"])
                peak.anon_kib = max(peak.anon_kib, status["RssAnon"])
        self.total_rss_peak_kib = max(self.total_rss_peak_kib, total_rss)
        if total_anon > self.total_anon_peak_kib:
            self.total_anon_peak_kib = total_anon
            self.total_anon_peak_at_s = time.time() - self._started
        available = mem_available_kib()
        self.available_min_kib = min(self.available_min_kib, available)
        if available < self.floor_kib:
            self.exhausted.set()
        self.load_max = max(self.load_max, os.getloadavg()[0])
        self.samples += 1


TRACER_COMMAND = "healthfed_common.learning_process"


def _command(pid: int) -> str:
    try:
        parts = psutil.Process(pid).cmdline()
    except psutil.Error:
        return "?"
    if "-m" in parts:
        return parts[parts.index("-m") + 1]
    return pathlib.Path(parts[0]).name if parts else "?"


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


def memory_summary(sampler: MemorySampler, silo_ids: list[str]) -> dict[str, Any]:
    peaks = list(sampler.peaks.values())

    def member(name: str) -> dict[str, Any]:
        main = [p for p in peaks if p.member == name and p.role == "main"]
        return {
            "peak_rss_mib": _mib(max((p.hwm_kib for p in main), default=0)),
            "peak_anon_mib": _mib(max((p.anon_kib for p in main), default=0)),
            "children": [{"command": p.command, "peak_rss_mib": _mib(p.hwm_kib), "peak_anon_mib": _mib(p.anon_kib)}
                         for p in peaks if p.member == name and p.role == "child"],
        }

    silos = {silo: member(silo) for silo in silo_ids}
    # The tracer is the child the cache decides about; other children are short-lived helpers
    # (e.g. `uname -p` run by platform.processor() while a library imports), listed but not counted.
    children = [c for s in silos.values() for c in s["children"] if c["command"] == TRACER_COMMAND]
    return {
        "aggregator": member("aggregator"),
        "aggregator_peak_rss_mib_including_children": max(
            [member("aggregator")["peak_rss_mib"], *(c["peak_rss_mib"] for c in member("aggregator")["children"])]),
        "silo_peak_rss_mib": _spread([s["peak_rss_mib"] for s in silos.values()]),
        "silo_peak_anon_mib": _spread([s["peak_anon_mib"] for s in silos.values()]),
        "silo_children_peak_rss_mib": _spread([c["peak_rss_mib"] for c in children]),
        "silo_children_peak_anon_mib": _spread([c["peak_anon_mib"] for c in children]),
        "federation_sum_rss_peak_mib": _mib(sampler.total_rss_peak_kib),
        "federation_sum_anon_peak_mib": _mib(sampler.total_anon_peak_kib),
        "federation_sum_anon_peak_at_s": round(sampler.total_anon_peak_at_s, 1),
        "machine_mem_available_min_mib": _mib(sampler.available_min_kib),
        "silos": silos,
        "samples": sampler.samples,
        "sample_interval_s": sampler.interval_s,
        "method": "per process: VmHWM (peak RSS, the kernel's high-water mark) and the largest sampled RssAnon "
                  "from /proc/<pid>/status, read until the process's last sample; children (the fresh "
                  "process that traces the plan) found with psutil.Process.children(recursive=True); "
                  "silo_children_* count only those tracers, other short-lived children are listed per silo. "
                  "RSS counts TensorFlow's shared library pages (~330 MiB) in every process, so the "
                  "federation's sum of RSS overstates its footprint; the sum of RssAnon plus one copy of "
                  "the libraries is closer to what the machine must hold",
    }


# -- one run ------------------------------------------------------------------------------------
ROUND_LINE = re.compile(r"round (\d+)/(\d+): ")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def register_hospitals(federation: LocalFederation, profiles: list[HospitalProfile], work_dir: pathlib.Path) -> None:
    """Writes each hospital's export and registers it through `silo-node data add`, two at a
    time (each CLI call imports TensorFlow, and there are two cores)."""
    def register(index: int, profile: HospitalProfile) -> None:
        federation.set_approval_policy(profile.silo_id, APPROVAL_POLICY)
        export = work_dir / "exports" / f"{profile.silo_id}.csv"
        export.parent.mkdir(parents=True, exist_ok=True)
        generate_export(profile, seed=100 + index).to_csv(export, index=False)
        federation.register_dataset(profile.silo_id, DATASET, export, DATASET_POLICY)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(register, index, profile) for index, profile in enumerate(profiles)]:
            done.result()


class LineRouter:
    """The federation's printer: forwards process output to the plan being measured."""

    def __init__(self) -> None:
        self.target: Callable[[str], None] = lambda line: None

    def __call__(self, line: str) -> None:
        self.target(line)


def empty_plan_caches(federation: LocalFederation) -> int:
    """Removes every traced-plan entry from every node's own cache folder (the cold start of a
    node that never ran this plan); returns how many there were."""
    removed = 0
    for folder in federation.plan_cache_folders():
        for entry in folder.glob("*.plan") if folder.is_dir() else []:
            entry.unlink()
            removed += 1
    return removed


def prepare_plan_caches(federation: LocalFederation, plan_path: pathlib.Path, cache: str,
                        traced_dir: pathlib.Path) -> dict[str, Any]:
    """cold: every node's cache emptied. warm: the plan's verified entry traced once here and
    copied into every node's own cache folder (the seeding is timed; it is not part of the run)."""
    if cache == "cold":
        return {"entries_removed_before_start": empty_plan_caches(federation)}
    began = time.time()
    entry = seed_plan_caches(federation, plan_path, traced_dir)
    if entry is None:
        raise SystemExit(f"could not trace {plan_path.name} here to seed the nodes' plan caches")
    return {"seeding_seconds": round(time.time() - began, 1), "seeded_entry": entry.name,
            "seeded_entry_bytes": entry.stat().st_size, "nodes_seeded": len(federation.plan_cache_folders()),
            "seeding_note": "this script traced the plan once (in a fresh tracer process) and copied the verified "
                            "entry into each node's own plan-cache folder before starting the nodes; not part "
                            "of run_wall_seconds"}


def measure_plan(federation: LocalFederation, router: LineRouter, silo_ids: list[str], rounds: int, protocol: str,
                 work_dir: pathlib.Path, *, sample_interval_s: float, floor_mib: float, cache: str = "cold",
                 timeout_s: float = 7200) -> dict[str, Any]:
    """Starts a fresh aggregator and fresh silo processes for one plan and measures them to
    the end of the plan. `cache`: "cold" (every node traces) or "warm" (every node's own cache
    holds the plan's entry when it starts), see the module docstring."""
    label = f"{protocol}/{cache}"
    plan_path = work_dir / f"plan-{protocol}-{cache}.json"
    plan = load_plan(len(silo_ids), rounds, protocol, "" if cache == "cold" else "-warm")
    plan_path.write_text(json.dumps(plan))
    out = work_dir / f"out-{protocol}-{cache}"
    cache_preparation = prepare_plan_caches(federation, plan_path, cache, work_dir / "traced-plans")
    load_at_start = os.getloadavg()
    sampler = MemorySampler(federation, sample_interval_s, int(floor_mib * 1024))
    marks: dict[str, float] = {}
    began = time.time()

    def show(line: str) -> None:
        name, _, text = line.partition("] ")
        if name != "[aggregator":
            return
        now = time.time()
        if text.startswith("plan "):
            marks.setdefault("plan_announced", now)
        if ROUND_LINE.match(text):
            marks.setdefault("first_round_line", now)
            marks["last_round_line"] = now
        if ROUND_LINE.match(text) or text.startswith(("waiting", "plan ", "evaluation", "aggregator run")):
            print(f"  [{label} {now - began:7.1f}s] {text[:140]} | federation anon "
                  f"{_mib(sampler.total_anon_peak_kib)} MiB peak, load {os.getloadavg()[0]:.1f}", flush=True)

    router.target = show
    aggregator = federation.start_aggregator(plan_path, out, linger_s=3)
    for silo_id in silo_ids:
        federation.start_silo(silo_id)
    sampler.start()
    try:
        deadline = time.time() + timeout_s
        while aggregator.process.poll() is None:
            if sampler.exhausted.is_set():
                federation.stop_all()
                raise SystemExit(f"stopped ({label}): MemAvailable fell below {floor_mib:.0f} MiB; "
                                 f"federation anon peak {_mib(sampler.total_anon_peak_kib)} MiB")
            if time.time() > deadline:
                federation.stop_all()
                raise SystemExit(f"stopped ({label}): no end after {timeout_s:.0f}s")
            time.sleep(0.5)
        run_s = time.time() - began
        for silo_id in silo_ids:
            federation.wait(silo_id, 120)
    finally:
        sampler.stop()
    if aggregator.process.returncode != 0:
        raise SystemExit(f"load run failed ({label}): aggregator exited {aggregator.process.returncode}\n"
                         + "\n".join(aggregator.lines[-30:]))
    report = federation.run_report(out)
    round_seconds = list(report["round_seconds"])
    counted = [len(r["silos"]) for r in report["round_metrics"]]
    traced = sorted({p.member for p in sampler.peaks.values()
                     if p.role == "child" and p.command == TRACER_COMMAND})
    return {
        "secure_aggregation": protocol,
        "plan_cache": cache,
        "plan_name": plan["name"],
        "plan_cache_preparation": cache_preparation,
        # members in which the sampler saw a tracer child: all of them cold, none warm unless an
        # entry was rejected (it samples every --sample-interval; a trace takes >10 s)
        "nodes_that_traced": traced,
        "silos": len(silo_ids),
        "rounds": rounds,
        "rounds_completed": report["rounds_completed"],
        "silos_counted_per_round": {"min": min(counted), "max": max(counted)},
        "run_wall_seconds": round(run_s, 1),
        # aggregator start -> plan announced: imports, tracing the plan in a fresh process
        "aggregator_ready_seconds": round(marks["plan_announced"] - began, 1),
        # aggregator start -> round 1 offered (about): also every silo starting and connecting
        "before_first_round_seconds": round(marks["first_round_line"] - round_seconds[0] - began, 1),
        # last round -> aggregator exit: held-out evaluation, model export, 3 s linger
        "after_last_round_seconds": round(began + run_s - marks["last_round_line"], 1),
        "rounds_total_seconds": round(sum(round_seconds), 1),
        "round_seconds": {
            "median": round(statistics.median(round_seconds), 2),
            "p95": round(_percentile(round_seconds, 95), 2),
            "min": round(min(round_seconds), 2),
            "max": round(max(round_seconds), 2),
            "median_excluding_round_1": round(statistics.median(round_seconds[1:] or round_seconds), 2),
            "p95_excluding_round_1": round(_percentile(round_seconds[1:] or round_seconds, 95), 2),
            "each": [round(s, 2) for s in round_seconds],
            "note": ("round 1 includes every silo tracing the plan in a fresh process (all at once here)"
                     if cache == "cold" else
                     "round 1 includes every silo loading the plan from its own cache (no tracing)"),
        },
        "rounds_per_minute": round(60 * len(round_seconds) / sum(round_seconds), 2),
        "rounds_per_minute_excluding_round_1": (round(60 * (len(round_seconds) - 1) / sum(round_seconds[1:]), 2)
                                                if len(round_seconds) > 1 else None),
        "rounds_per_minute_over_run_wall": round(60 * len(round_seconds) / run_s, 2),
        "final_training_metrics": report["round_metrics"][-1]["aggregate"],
        "held_out_evaluation": report["evaluation"].get("aggregate", {}),
        "released_csv_rows": _csv_rounds(report),
        "memory": memory_summary(sampler, silo_ids),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "load_average_1min_max_during_run": round(sampler.load_max, 2),
    }


def _csv_rounds(report: dict[str, Any]) -> int | None:
    files = report.get("round_metrics_files")
    if not files:
        return None
    with open(files["csv"], newline="") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


# -- machine ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = cpu_model()
    memory_kib = 0
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    versions: dict[str, str | None] = {}
    for package in ("tensorflow", "tensorflow-federated", "numpy", "grpcio", "psutil"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kib / 1024**2, 1),
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "a shared machine: other jobs (other agents' test runs) used the same 2 cores during the "
                "run, see each run's load averages; times are upper bounds for an idle machine",
    }


def summary_line(figures: dict[str, Any]) -> str:
    memory, rounds = figures["memory"], figures["round_seconds"]
    return (
        f"{figures['secure_aggregation']}/{figures.get('plan_cache', 'cold')}: run {figures['run_wall_seconds']:.0f}s, round median {rounds['median']:.2f}s "
        f"p95 {rounds['p95']:.2f}s (round 1 {rounds['each'][0]:.1f}s), {figures['rounds_per_minute']:.2f} rounds/min; "
        f"peak RSS aggregator {memory['aggregator']['peak_rss_mib']} MiB, silos median "
        f"{memory['silo_peak_rss_mib']['median']} max {memory['silo_peak_rss_mib']['max']} MiB, tracer children max "
        f"{memory['silo_children_peak_rss_mib'].get('max')} MiB; federation sum of anon memory peak "
        f"{memory['federation_sum_anon_peak_mib']} MiB (sum of RSS {memory['federation_sum_rss_peak_mib']} MiB)"
    )


def comparison(runs: list[dict[str, Any]], previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per setting, cold and warm (and the previous file's run of that setting) side by side."""
    rows = []
    for protocol in dict.fromkeys(r["secure_aggregation"] for r in runs):
        by_cache = {r.get("plan_cache", "cold"): r for r in runs if r["secure_aggregation"] == protocol}
        old = next((r for r in (previous or {}).get("runs", []) if r["secure_aggregation"] == protocol), None)
        if old is not None:
            by_cache["previous"] = old

        def each(pick: Callable[[dict[str, Any]], Any], by: dict[str, dict[str, Any]] = by_cache) -> dict[str, Any]:
            return {name: pick(run) for name, run in by.items()}

        row: dict[str, Any] = {
            "secure_aggregation": protocol,
            "round_1_seconds": each(lambda r: r["round_seconds"]["each"][0]),
            "steady_round_median_seconds": each(lambda r: r["round_seconds"]["median_excluding_round_1"]),
            "before_first_round_seconds": each(lambda r: r["before_first_round_seconds"]),
            "aggregator_ready_seconds": each(lambda r: r["aggregator_ready_seconds"]),
            "run_wall_seconds": each(lambda r: r["run_wall_seconds"]),
            "silo_peak_rss_mib_median": each(lambda r: r["memory"]["silo_peak_rss_mib"]["median"]),
            "silo_tracer_children_peak_rss_mib_max": each(lambda r: r["memory"]["silo_children_peak_rss_mib"].get("max")),
            "federation_sum_anon_peak_mib": each(lambda r: r["memory"]["federation_sum_anon_peak_mib"]),
            "federation_sum_rss_peak_mib": each(lambda r: r["memory"]["federation_sum_rss_peak_mib"]),
            "nodes_that_traced": each(lambda r: len(r["nodes_that_traced"]) if "nodes_that_traced" in r else None),
        }
        first = row["round_1_seconds"]
        if "warm" in first:
            for name in ("cold", "previous"):
                if name in first:
                    row[f"round_1_{name}_over_warm"] = round(first[name] / first["warm"], 2)
            row["round_1_over_steady_median_warm"] = round(
                first["warm"] / row["steady_round_median_seconds"]["warm"], 2)
        rows.append(row)
    return rows


def read_previous(path: pathlib.Path | None) -> dict[str, Any] | None:
    """The figures being replaced, without their own `previous` (one generation back is kept)."""
    if path is None or not path.is_file():
        return None
    old = json.loads(path.read_text())
    old.pop("previous", None)
    old.pop("comparison", None)
    resolved = path.resolve()
    source = str(resolved.relative_to(REPO)) if REPO in resolved.parents else str(path)
    return {"source": f"{source} as it was before this run", **old}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/load_bench.py", description=__doc__.split("\n\n")[0],
        epilog="Writes --out (default bench-results/load.json). Each run needs about "
               "(silos + 1) x 0.5 GiB of memory while the processes trace the plan.",
    )
    parser.add_argument("--silos", type=int, default=20, help="silo processes (default 20)")
    parser.add_argument("--rounds", type=int, default=20, help="training rounds (default 20)")
    parser.add_argument("--secure-aggregation", nargs="+", choices=("none", "secagg", "secagg_plus"),
                        default=["none", "secagg"],
                        help="settings, in order (default: none secagg)")
    parser.add_argument("--plan-cache", nargs="+", choices=("cold", "warm"), default=["cold", "warm"],
                        help="per setting, one run per plan-cache state, in order (default: cold warm)")
    parser.add_argument("--previous", type=pathlib.Path, default=None,
                        help="figures to keep beside the new ones under `previous` "
                             "(default: the existing --out file, read before the first run)")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="memory sampling period in seconds")
    parser.add_argument("--min-available-mib", type=float, default=2048,
                        help="stop the run if the machine's MemAvailable falls below this (default 2048)")
    parser.add_argument("--work-dir", type=pathlib.Path, default=None,
                        help="keep federations here (default: a temporary directory, removed afterwards)")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "bench-results" / "load.json")
    args = parser.parse_args(argv)
    if args.silos < 2 or args.rounds < 1:
        parser.error("need at least 2 silos and 1 round")
    command = shlex.join(["python", "benchmarks/load_bench.py", *(sys.argv[1:] if argv is None else argv)])
    previous = read_previous(args.previous or args.out)
    result: dict[str, Any] = {
        "command": command,
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": "logistic_regression on 15 inputs (9 clinical features, two one-hot), 1 local epoch, batch 32",
        "complete": False,
        "runs": [],
        "comparison": [],
        "previous": previous,
    }

    def write() -> None:
        result["comparison"] = comparison(result["runs"], previous)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))

    with tempfile.TemporaryDirectory(prefix="healthfed-load-") as scratch:
        root = args.work_dir or pathlib.Path(scratch)
        profiles = hospitals(args.silos)
        silo_ids = [p.silo_id for p in profiles]
        began = time.time()
        router = LineRouter()
        with local_federation(root / "federation", silo_ids, federation="load-bench", printer=router) as federation:
            register_hospitals(federation, profiles, root)
            result["setup_seconds"] = round(time.time() - began, 1)
            print(f"{args.silos} hospitals provisioned and registered in {result['setup_seconds']:.0f}s", flush=True)
            for protocol in args.secure_aggregation:
                for cache in args.plan_cache:
                    print(f"{args.silos} silos x {args.rounds} rounds, secure aggregation: {protocol}, "
                          f"plan cache: {cache}", flush=True)
                    figures = measure_plan(federation, router, silo_ids, args.rounds, protocol, root, cache=cache,
                                           sample_interval_s=args.sample_interval, floor_mib=args.min_available_mib)
                    result["runs"].append(figures)
                    print(summary_line(figures), flush=True)
                    write()  # a run cut short later still leaves the runs done so far
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["complete"] = True
    write()
    for row in result["comparison"]:
        print(f"{row['secure_aggregation']}: round 1 " + ", ".join(f"{k} {v:.1f}s" for k, v in row["round_1_seconds"].items())
              + "".join(f"; {k} {row[k]}" for k in row if k.startswith("round_1_") and k.endswith(("_warm",))),
              flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
