"""Commands that neither train nor evaluate never import TensorFlow (issue 17, item 3).

A TensorFlow import costs a CLI 8-10 s before it can print a line, so `--help`, enrolment,
revocation, spending, plan review, the ledger, the egress record and every compliance command
must not load it. Each check runs in a fresh interpreter (this test process may have imported
TensorFlow already) and looks at `sys.modules` after each call, so the failure names the first
command that pulled it in. The subcommands are read from the real argument parsers, so a
command added later is covered without editing this file. Wall time is not asserted here;
benchmarks/startup_bench.py measures it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the TensorFlow family: any of these means the TensorFlow runtime was loaded
HEAVY = ("tensorflow", "tensorflow_federated", "tensorflow_privacy", "keras", "jax")

# Runs in a fresh interpreter: argv[1] is the CLI module, argv[2] a JSON list of argument
# lists (or "HELP" for every --help); prints one JSON object per call with the exit code and
# the heavy modules loaded so far.
CHILD = r"""
import argparse, contextlib, importlib, io, json, sys
HEAVY = set(sys.argv[3].split(","))

def heavy_loaded():
    return sorted({name.split(".")[0] for name in sys.modules} & HEAVY)

def help_calls(parser, prefix):
    calls = [prefix + ["--help"]]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                calls += help_calls(sub, prefix + [name])
    return calls

module = importlib.import_module(sys.argv[1])
if sys.argv[2] == "HELP":
    calls = help_calls(module.build_parser(), [])
else:
    calls = json.loads(sys.argv[2])
for argv in calls:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(argv)
    except SystemExit as stop:
        code = stop.code
    print(json.dumps({"argv": argv, "code": code, "heavy": heavy_loaded(),
                      "stderr": err.getvalue()[-400:]}), flush=True)
"""


def _calls(cli: str, calls: list[list[str]] | str, cwd: Path = REPO) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HEALTHFED_OPERATOR": "test operator"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, cli, calls if isinstance(calls, str) else json.dumps(calls), ",".join(HEAVY)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("cli", ["aggregator.cli.main", "silo_node.cli.main", "compliance.cli.main"])
def test_every_help_page_answers_without_tensorflow(cli: str) -> None:
    results = _calls(cli, "HELP")
    assert len(results) >= 4, results  # the top level and its subcommands were all reached
    for result in results:
        assert result["code"] == 0, result
        assert result["heavy"] == [], f"{cli} {' '.join(result['argv'])} imported {result['heavy']}"


def test_the_run_commands_are_the_ones_that_load_tensorflow() -> None:
    """The check above can fail: the modules that train do load TensorFlow when imported."""
    child = "import sys, silo_node.runner, aggregator.coordinator; print(sorted({n.split('.')[0] for n in sys.modules} & {'tensorflow'}))"
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip().splitlines()[-1] == "['tensorflow']"


def test_working_commands_that_do_not_train_never_import_tensorflow(tmp_path: Path) -> None:
    """Real work, not just help pages: provision, enrol both ways, spending, revoke, the silo's
    data/plans/ledger/egress views and compliance verify/show/export, each run to exit 0."""
    fed = tmp_path / "fed"
    config = str(fed / "aggregator" / "aggregator.yaml")
    kit = fed / "kits" / "h1"
    aggregator_before = _calls("aggregator.cli.main", [
        ["provision", "--federation", "fed", "--silos", "h1,h2", "--address", "localhost:50051", "--out", str(fed)],
    ])
    silo = _calls("silo_node.cli.main", [["enrol", "--config", str(kit / "silo.yaml")]])
    aggregator = _calls("aggregator.cli.main", [
        ["enrol", "--config", config, str(kit / "enrolment-request.json"), "--out", str(tmp_path / "h1.pem")],
        ["spending", "--config", config],
        ["spending", "--config", config, "--json"],
    ])
    state = str(kit / "state")
    silo += _calls("silo_node.cli.main", [
        ["enrol", "--config", str(kit / "silo.yaml"), "--install-certificate", str(tmp_path / "h1.pem")],
        ["data", "list", "--state-dir", state],
        ["plans", "list", "--state-dir", state],
        ["ledger", "--state-dir", state, "show"],
        ["egress", "--state-dir", state],
    ])
    from tests.compliance.compliance_support import write_processing_record

    write_processing_record(kit / "state")
    aggregator += _calls("aggregator.cli.main", [["revoke", "h1", "--config", config, "--reason", "test"]])
    compliance = _calls("compliance.cli.main", [
        ["verify", "--node", state],
        ["show", "--node", state, "--json"],
        ["export", "--node", state, "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv",
         "--out", str(tmp_path / "report.csv")],
        ["verify", "--node", str(fed / "aggregator" / "state"), "--no-record"],
    ])
    results = aggregator_before + silo + aggregator + compliance
    assert len(results) == 15
    for result in results:
        assert result["code"] in (0, None), result
        assert result["heavy"] == [], f"{' '.join(result['argv'])} imported {result['heavy']}"
