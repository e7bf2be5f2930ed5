"""Start-up benchmark: CLI start times, first vs steady rounds, memory per process (a script,
not a test).

    .venv/bin/python benchmarks/startup_bench.py [--silos 2] [--rounds 4] [--runs 5]

Measures, in one run, for issue 17 items 3 and 4:
* **CLI start times**: each command is started `--runs` times as a fresh process
  (`python -m <cli module> ...`), timed with time.perf_counter around the process from start to
  exit, its peak RSS read from the kernel's accounting of the reaped child (os.wait4); the
  median is the figure, min and max show the noise. Help pages and real commands that neither
  train nor evaluate. "Old" rows run the same command with the modules the old CLI imported at
  start-up (the coordinator, hence TensorFlow, for `aggregator`; the silo's node, connection and
  diagnostics modules, hence pandas, gRPC and the privacy accountant, for `silo-node`) imported
  first: what `--help` cost before the imports were deferred.
* **First vs steady round**: a real federation on loopback (pipelines.local_federation, as
  benchmarks/load_bench.py): one `aggregator run` and one `silo-node run` per hospital, mutual
  TLS, datasets registered through `silo-node data add`. The same plan runs twice, side by
  side: COLD on nodes whose traced-plan cache is empty (every node traces the plan in a fresh
  process: the behaviour before the cache), then WARM on a second federation whose nodes'
  plan-cache folders hold what the cold run's nodes wrote (a restarted node). The plan has no
  secure aggregation, so it carries no cohort and its hash is the same in both federations.
  Round seconds come from the aggregator's run report; "aggregator ready" is aggregator start
  to the plan line (imports plus the aggregator's own trace).
* **Memory**: every federation process and its children (the tracer) sampled from
  /proc/<pid>/status (load_bench.MemorySampler): peak RSS (VmHWM) per process.

Writes bench-results/startup.json with the figures, the exact command and the machine (a
shared machine: times are upper bounds for an idle one).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
ORIGINAL_REPO = pathlib.Path(os.environ.get("HEALTHFED_STARTUP_BENCH_REPO", REPO))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from load_bench import (  # noqa: E402
    LineRouter, MemorySampler, hospitals, load_plan, machine, memory_summary, register_hospitals,
)
from pipelines.local_federation import LocalFederation, local_federation  # noqa: E402

OLD_AGGREGATOR_IMPORTS = "import aggregator.coordinator"
OLD_SILO_IMPORTS = "import silo_node.node, silo_node.connection, silo_node.diagnostics, silo_node.approvals"
CLI_MODULES = {"aggregator": "aggregator.cli.main", "silo-node": "silo_node.cli.main", "compliance": "compliance.cli.main"}


# -- CLI start times --------------------------------------------------------------------------
def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit status of one fresh process."""
    began = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, process.returncode


def time_command(label: str, argv: list[str], runs: int, env: dict[str, str],
                 fresh: Any = None) -> dict[str, Any]:
    """`fresh(i)` returns argv for run i when each run needs its own output (provision)."""
    walls, peaks, codes = [], [], set()
    for index in range(runs):
        wall, peak, code = _timed(fresh(index) if fresh else argv, env)
        walls.append(wall)
        peaks.append(peak)
        codes.add(code)
    row = {
        "command": label,
        "runs": runs,
        "wall_s": {"median": round(statistics.median(walls), 3), "min": round(min(walls), 3),
                   "max": round(max(walls), 3)},
        "peak_rss_mib_median": round(statistics.median(peaks), 1),
        "exit_codes": sorted(codes),
    }
    print(f"  {label:<60} {row['wall_s']['median']:6.2f}s (min {row['wall_s']['min']:.2f}, "
          f"max {row['wall_s']['max']:.2f})  {row['peak_rss_mib_median']:.0f} MiB  exit {sorted(codes)}", flush=True)
    return row


def cli_times(federation: LocalFederation, scratch: pathlib.Path, runs: int, old_runs: int) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HEALTHFED_OPERATOR": "startup bench",
           "PYTHONPATH": str(REPO)}
    python = sys.executable
    config = str(federation.federation.aggregator_config)
    silo = federation.silo_ids[0]
    state = str(federation.state_dir(silo))

    def cli(name: str, *args: str) -> list[str]:
        return [python, "-m", CLI_MODULES[name], *args]

    def old(imports: str, module: str, *args: str) -> list[str]:
        code = f"import sys; {imports}; from {module} import main; sys.exit(main({list(args)!r}))"
        return [python, "-c", code]

    rows = []
    helps = [("aggregator", ["--help"]), ("aggregator", ["run", "--help"]), ("aggregator", ["provision", "--help"]),
             ("aggregator", ["plan", "--help"]), ("silo-node", ["--help"]), ("silo-node", ["run", "--help"]),
             ("silo-node", ["data", "--help"]), ("compliance", ["--help"])]
    for name, args in helps:
        rows.append(time_command(f"{name} {' '.join(args)}", cli(name, *args), runs, env))
    commands = [
        ("aggregator", ["spending", "--config", config]),
        ("silo-node", ["data", "list", "--state-dir", state]),
        ("silo-node", ["plans", "list", "--state-dir", state]),
        ("silo-node", ["ledger", "--state-dir", state, "show"]),
        ("silo-node", ["egress", "--state-dir", state]),
        ("compliance", ["verify", "--node", state, "--no-record"]),
    ]
    for name, args in commands:
        shown = " ".join("CONFIG" if a == config else "STATE" if a == state else a for a in args)
        rows.append(time_command(f"{name} {shown}", cli(name, *args), runs, env))
    rows.append(time_command(
        "aggregator provision (2 silos, new folder each run)", [], runs, env,
        fresh=lambda i: cli("aggregator", "provision", "--federation", "bench", "--silos", "st-marys,riverside",
                            "--address", "localhost:1", "--out", str(scratch / f"provision-{i}")),
    ))
    old_rows = [
        time_command("OLD aggregator --help (+ the coordinator, hence TensorFlow)",
                     old(OLD_AGGREGATOR_IMPORTS, "aggregator.cli.main", "--help"), old_runs, env),
        time_command("OLD silo-node --help (+ node, connection, diagnostics, approvals)",
                     old(OLD_SILO_IMPORTS, "silo_node.cli.main", "--help"), old_runs, env),
    ]
    return {"method": f"fresh process per run ({python} -m MODULE ...), time.perf_counter from start to exit; "
                      "peak RSS from os.wait4 (ru_maxrss; it cannot read below this benchmark's own RSS at the fork, "
                      "about 130 MiB, so small commands all show that floor); median of the runs",
            "now": rows, "old_import_set": old_rows}


# -- first vs steady round --------------------------------------------------------------------
def cache_folders(federation: LocalFederation) -> dict[str, pathlib.Path]:
    aggregator_state = federation.federation.aggregator_dir / "state"
    return {"aggregator": aggregator_state / "plan-cache"} | {
        silo: federation.state_dir(silo) / "plan-cache" for silo in federation.silo_ids}


def run_plan(federation: LocalFederation, router: LineRouter, plan_path: pathlib.Path, out: pathlib.Path,
             label: str, timeout_s: float) -> dict[str, Any]:
    sampler = MemorySampler(federation, 0.25, 1024 * 1024)
    marks: dict[str, float] = {}
    began = time.time()

    def show(line: str) -> None:
        name, _, text = line.partition("] ")
        if name == "[aggregator":
            if text.startswith("plan ") and "hash" in text:
                marks.setdefault("plan_announced", time.time())
            if text.startswith("round "):
                print(f"  [{label} {time.time() - began:6.1f}s] {text[:120]}", flush=True)

    router.target = show
    aggregator = federation.start_aggregator(plan_path, out, linger_s=2)
    for silo_id in federation.silo_ids:
        federation.start_silo(silo_id)
    sampler.start()
    try:
        aggregator.process.wait(timeout=timeout_s)
        run_s = time.time() - began
        for silo_id in federation.silo_ids:
            federation.wait(silo_id, 120)
    finally:
        sampler.stop()
    if aggregator.process.returncode != 0:
        raise SystemExit(f"{label} run failed: aggregator exited {aggregator.process.returncode}\n"
                         + "\n".join(aggregator.lines[-30:]))
    report = federation.run_report(out)
    rounds = [float(s) for s in report["round_seconds"]]
    memory = memory_summary(sampler, federation.silo_ids)
    tracers = [c for s in memory["silos"].values() for c in s["children"]] + memory["aggregator"]["children"]
    # the nodes' own log lines about the first task and the plan cache, with their timestamps
    timeline = {name: [line[:200] for line in member.lines
                       if any(word in line for word in ("took the train task", "trained", "plan cache", "round 1/",
                                                        "listening", "polling"))][:12]
                for name, member in federation.members.items()}
    return {
        "label": label,
        "plan_hash": report.get("plan_hash"),
        "fingerprint": report.get("fingerprint"),
        "rounds_completed": report["rounds_completed"],
        "run_wall_s": round(run_s, 1),
        "aggregator_ready_s": round(marks.get("plan_announced", began) - began, 1),
        "round_s": [round(s, 2) for s in rounds],
        "first_round_s": round(rounds[0], 2),
        "steady_round_median_s": round(statistics.median(rounds[1:] or rounds), 2),
        "first_over_steady": round(rounds[0] / max(statistics.median(rounds[1:] or rounds), 1e-9), 2),
        "tracer_processes_seen": len(tracers),
        "tracer_processes_by_node": {"aggregator": len(memory["aggregator"]["children"])}
        | {silo: len(m["children"]) for silo, m in memory["silos"].items()},
        "started_at_utc": time.strftime("%H:%M:%S", time.gmtime(began)),
        "timeline": timeline,
        "peak_rss_mib": {
            "aggregator": memory["aggregator"]["peak_rss_mib"],
            "silos": {silo: s["peak_rss_mib"] for silo, s in memory["silos"].items()},
            "tracer_children": [c["peak_rss_mib"] for c in tracers],
            "federation_sum_rss_peak": memory["federation_sum_rss_peak_mib"],
            "federation_sum_anon_peak": memory["federation_sum_anon_peak_mib"],
        },
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def measure(root: pathlib.Path, silos: int, rounds: int, runs: int, old_runs: int, timeout_s: float) -> dict[str, Any]:
    """The cold run, the warm run, then the CLI times against the cold federation's folders."""
    profiles = hospitals(silos)
    silo_ids = [p.silo_id for p in profiles]
    plan_path = root / "plan.json"
    plan = load_plan(silos, rounds, "none") | {"name": f"startup-{silos}x{rounds}", "round_deadline_s": 600}
    plan_path.write_text(json.dumps(plan))
    router = LineRouter()
    result: dict[str, Any] = {"rounds": {"plan": plan}}
    with local_federation(root / "cold", silo_ids, federation="startup-bench", printer=router) as cold:
        register_hospitals(cold, profiles, root / "cold")
        print(f"cold cache: {silos} silos x {rounds} rounds (every node traces the plan)", flush=True)
        result["rounds"]["cold_cache"] = run_plan(cold, router, plan_path, root / "out-cold", "cold", timeout_s)
        with local_federation(root / "warm", silo_ids, federation="startup-bench", printer=router) as warm:
            register_hospitals(warm, profiles, root / "warm")
            copied = {}
            for node, source in cache_folders(cold).items():
                target = cache_folders(warm)[node]
                shutil.copytree(source, target)
                copied[node] = sorted(p.name for p in target.iterdir())
            result["rounds"]["warm_cache_entries_copied"] = copied
            print("warm cache: the same plan on nodes holding the cold run's plan-cache folders", flush=True)
            result["rounds"]["warm_cache"] = run_plan(warm, router, plan_path, root / "out-warm", "warm", timeout_s)
        print("CLI start times (median of fresh processes):", flush=True)
        result["cli"] = cli_times(cold, root, runs, old_runs)
    return result


SNAPSHOT_ENV = "HEALTHFED_STARTUP_BENCH_SNAPSHOT"
SNAPSHOT_PACKAGES = ("healthfed_common", "silo_node", "aggregator", "compliance", "pipelines", "benchmarks")


def run_from_snapshot(argv: list[str], out: pathlib.Path) -> None:
    """Re-runs this script from a copy of the source taken now. Other people edit this working
    tree while the benchmark runs; an edit to a source the trace read rightly invalidates the
    traced-plan cache between the cold and the warm run, which would measure the edit, not the
    cache. Does not return."""
    snapshot = pathlib.Path(tempfile.mkdtemp(prefix="healthfed-startup-src-"))
    for package in SNAPSHOT_PACKAGES:
        shutil.copytree(REPO / package, snapshot / package, ignore=shutil.ignore_patterns("__pycache__"))
    os.environ[SNAPSHOT_ENV] = str(snapshot)
    os.environ["HEALTHFED_STARTUP_BENCH_REPO"] = str(REPO)
    os.environ["PYTHONPATH"] = str(snapshot)
    os.chdir(snapshot)
    script = str(snapshot / "benchmarks" / "startup_bench.py")
    os.execv(sys.executable, [sys.executable, script, *argv, "--out", str(out.resolve())])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/startup_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--silos", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="runs per CLI command (median reported)")
    parser.add_argument("--old-runs", type=int, default=3, help="runs per old-import-set command")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a federated run may take")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "bench-results" / "startup.json")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    if SNAPSHOT_ENV not in os.environ:
        run_from_snapshot(given, args.out)
    command = shlex.join(["python", "benchmarks/startup_bench.py", *given])
    result: dict[str, Any] = {"command": command, "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory(prefix="healthfed-startup-") as scratch:
        root = pathlib.Path(scratch)
        result |= measure(root, args.silos, args.rounds, args.runs, args.old_runs, args.timeout)
    rounds = result["rounds"]
    cold_run, warm_run = rounds["cold_cache"], rounds["warm_cache"]
    result["summary"] = {
        "same_plan_hash_and_fingerprint": cold_run["plan_hash"] == warm_run["plan_hash"]
        and cold_run["fingerprint"] == warm_run["fingerprint"],
        "first_round_s": {"cold_cache": cold_run["first_round_s"], "warm_cache": warm_run["first_round_s"]},
        "steady_round_median_s": {"cold_cache": cold_run["steady_round_median_s"],
                                  "warm_cache": warm_run["steady_round_median_s"]},
        "first_over_steady": {"cold_cache": cold_run["first_over_steady"], "warm_cache": warm_run["first_over_steady"]},
        "aggregator_ready_s": {"cold_cache": cold_run["aggregator_ready_s"], "warm_cache": warm_run["aggregator_ready_s"]},
        "run_wall_s": {"cold_cache": cold_run["run_wall_s"], "warm_cache": warm_run["run_wall_s"]},
        "tracer_processes": {"cold_cache": cold_run["tracer_processes_seen"], "warm_cache": warm_run["tracer_processes_seen"]},
        "cli_help_median_s": {row["command"]: row["wall_s"]["median"] for row in result["cli"]["now"]
                              if row["command"].endswith("--help")},
        "cli_help_median_s_old_import_set": {row["command"]: row["wall_s"]["median"]
                                             for row in result["cli"]["old_import_set"]},
    }
    if warm_run["tracer_processes_seen"]:
        print("WARNING: the warm run still traced (a cache entry was missing or invalid: was HealthFed's code "
              "edited during the run?)", flush=True)
    result["source"] = ("a copy of the working tree's packages taken when the benchmark started (at commit "
                        f"{_head()}), so edits made meanwhile cannot invalidate the cache between the runs")
    shutil.rmtree(os.environ[SNAPSHOT_ENV], ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out}")
    return 0


def _head() -> str:
    try:
        return subprocess.run(["git", "-C", str(ORIGINAL_REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
