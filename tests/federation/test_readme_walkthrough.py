"""The README's "Your first federation, step by step", run as written: its fenced `bash` blocks
are read from README.md and every command is run as its own process with this repository's
console scripts, so the README cannot drift from what the code does.

The order is the README's: provision, enrol both hospitals, register one semicolon CSV and one
Excel export from policy templates, plan init and validate, then `aggregator run` started
before any approval, both `silo-node run`, and -- once the aggregator says it is waiting for
both hospitals, plus a delay (the README's "a minute later"; `HEALTHFED_WALKTHROUGH_DELAY_S`,
default 5 s) -- each hospital's approval block, run concurrently as two hospitals would. The
plan must complete in that one aggregator run. Only three substitutions are made: a free port
for the README's 50551, the plan hash for `<hash>`, and the exports, which the test writes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from compliance.log_store import read_raw_log

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECTION = "## Your first federation, step by step"
README_PORT = "127.0.0.1:50551"
DELAY_S = float(os.environ.get("HEALTHFED_WALKTHROUGH_DELAY_S", "5"))
LONG_RUNNING = ("aggregator run", "silo-node run")


def free_port() -> int:
    """A loopback port nobody listens on (this test imports nothing that loads TensorFlow)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def walkthrough_blocks(readme: str) -> list[list[str]]:
    """Each fenced bash block of the section, as its commands (comments dropped)."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end != -1 else None]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = []
    for block in blocks:
        lines = [line.split(" #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]
        commands.append([line for line in lines if line and not line.startswith("#")])
    return commands


def _exports(folder: Path) -> None:
    """St Mary's semicolon CSV and Riverside's Excel sheet, with identifiers in them."""
    head = ["mrn", "name", "birth_date", "age", "chol", "sex", "outcome"]
    for silo, seed in (("st-marys", 1), ("riverside", 2)):
        rng = np.random.default_rng(seed)
        rows = []
        for index in range(60):
            age, chol = int(rng.integers(30, 86)), int(rng.integers(150, 351))
            risk = (age - 55) / 15 + (chol - 250) / 60 + rng.normal()
            rows.append([f"MRN{seed}{index:04d}", f"Patient {index}",
                         f"19{rng.integers(30, 90)}-0{rng.integers(1, 10)}-1{rng.integers(0, 10)}",
                         age, chol, str(rng.choice(["F", "M"])), int(risk > 0.3)])
        if silo == "st-marys":
            text = "\n".join(";".join(str(v) for v in row) for row in [head, *rows]) + "\n"
            (folder / "st-marys-export.csv").write_text(text)
        else:
            book = openpyxl.Workbook()
            sheet = book.active
            sheet.title = "Patients"
            for row in [head, *rows]:
                sheet.append(row)
            book.save(folder / "riverside-export.xlsx")


class Walkthrough:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = f"127.0.0.1:{free_port()}"
        self.hash = "<hash>"
        scripts = Path(sys.executable).parent
        self.env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.env.pop("HEALTHFED_OPERATOR", None)  # the README names every person with --by
        self.env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the nodes keep TensorFlow's noise off the console themselves
        self.background: dict[str, subprocess.Popen[str]] = {}
        self.lines: dict[str, list[str]] = {}

    def argv(self, command: str) -> list[str]:
        return shlex.split(command.replace(README_PORT, self.port).replace("<hash>", self.hash))

    def run(self, command: str) -> str:
        result = subprocess.run(self.argv(command), cwd=self.folder, env=self.env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def start(self, name: str, command: str) -> None:
        process = subprocess.Popen(self.argv(command), cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.background[name], self.lines[name] = process, []

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.lines[name].append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, name: str, text: str, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while not any(text in line for line in self.lines[name]):
            process = self.background[name]
            if process.poll() is not None or time.time() > deadline:
                raise AssertionError(f"{name} never printed {text!r}:\n" + "\n".join(self.lines[name][-40:]))
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.background.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.background.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README.read_text())
    starts = [i for i, block in enumerate(blocks) if any(c.startswith(LONG_RUNNING) for c in block)]
    approvals = [i for i, block in enumerate(blocks) if any(" plans approve " in f" {c} " for c in block)]
    assert starts and approvals and max(starts) < min(approvals), "the README starts the nodes before approving"
    before, after = blocks[: min(starts)], blocks[max(approvals) + 1:]
    flat = [c for block in blocks for c in block]
    for needed in ("aggregator provision", "data policy-template", "data add", "plan init", "plan validate",
                   "aggregator run", "silo-node run", "plans approve", "ledger set-budget"):
        assert any(needed in c for c in flat), f"the walk-through lost its `{needed}` step"
    _exports(tmp_path)
    walk = Walkthrough(tmp_path)
    began = time.time()
    try:
        outputs = [walk.run(command) for block in before for command in block]
        validated = next(o for o in outputs if "valid. plan" in o)
        walk.hash = re.search(r"plans approve ([0-9a-f]{12})", validated).group(1)  # type: ignore[union-attr]
        registered = "\n".join(outputs)
        assert "read as: CSV, delimiter semicolon ';'" in registered and "read as: XLSX, sheet 'Patients'" in registered
        for index in starts:
            for command in blocks[index]:
                walk.start(command.split()[0] if command.startswith("aggregator") else command.split("/kits/")[1].split("/")[0],
                           command)
            if any(c.startswith("aggregator run") for c in blocks[index]):
                walk.wait_for("aggregator", "aggregator listening on port", 240)
        # before any approval the aggregator waits for both hospitals, naming the command to run
        walk.wait_for("aggregator", "waiting for people at riverside, st-marys", 300)
        time.sleep(DELAY_S)
        assert walk.background["aggregator"].poll() is None, "the aggregator gave up before the hospitals acted"
        failures: list[BaseException] = []

        def hospital(block: list[str]) -> None:
            try:
                for command in block:
                    walk.run(command)
            except BaseException as error:  # reported below, in the test's thread
                failures.append(error)

        threads = [threading.Thread(target=hospital, args=(blocks[i],)) for i in approvals]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=400)
        assert not failures, failures
        assert walk.background["aggregator"].wait(timeout=400) == 0, "\n".join(walk.lines["aggregator"][-40:])
        walk.stop()
        verified = {command: walk.run(command) for block in after for command in block}
    finally:
        walk.stop()
    output = walk.lines["aggregator"]
    text = "\n".join(output)
    # one aggregator run: the plan waited for people, then completed
    assert "round 1/1: 2/2 silos (riverside, st-marys), loss/accuracy not released (DP plan), " \
           "ε spent (declared) riverside 3, st-marys 3" in text, text
    assert re.search(r"round 1/1: .*, elapsed \d+:\d\d, ETA 0:00", text), text
    last = output[-1]
    assert last.startswith("done — model: runs/readmission/model/saved_model, reports: runs/readmission, "
                           "audit logs: aggregator VERIFIED"), last
    assert (tmp_path / "runs" / "readmission" / "model" / "model-card.json").is_file()
    assert text.count("  st-marys refused round 1: AWAITING_APPROVAL") == 1, "a pending hospital is named once"
    # starting the plan was recorded in the aggregator's log, naming the coordinator
    aggregator_log = read_raw_log(tmp_path / "federation" / "aggregator" / "state" / "audit" / "audit.sqlite3")
    started = [json.loads(e) for _, e in aggregator_log.entries if b'"kind":"plan.started"' in e]
    assert [(e["agents"][0]["who"], e["detail"]["plan_hash"][:12], e["detail"]["epsilon"]) for e in started] == [
        ("person:C. Lee", walk.hash, 3.0)], started
    # the officer's check of the coordinator's log reads both hospitals' copies of its checkpoints
    coordinator = next(out for command, out in verified.items() if "--node federation/aggregator/state" in command)
    assert "Rollback checked against" in coordinator and coordinator.count("(found automatically") == 2, coordinator
    # TensorFlow's own output went to the nodes' log files, not the console
    for name, lines in walk.lines.items():
        assert not any("tensorflow/" in line or "cuda" in line.lower() for line in lines), (name, lines[:20])
    assert "tensorflow" in (tmp_path / "federation" / "aggregator" / "state" / "aggregator.log").read_text()
    print(f"walk-through: {time.time() - began:.0f}s")


@pytest.mark.parametrize("needed", ["<hash>", README_PORT])
def test_readme_walkthrough_uses_the_substituted_placeholders(needed: str) -> None:
    """The test substitutes exactly these; if the README stops using them, this says so."""
    assert any(needed in c for block in walkthrough_blocks(README.read_text()) for c in block)
