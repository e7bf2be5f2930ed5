"""What `aggregator run` shows people per round (aggregator/progress.py), without TensorFlow:
the plain line tests and logs read, the DP rule on training metrics, ε per hospital as
declared, the ETA, the rich bar in a terminal, the closing line, and the node log file that
keeps TensorFlow's own output off the console."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from aggregator.progress import RoundSummary, RunDisplay, closing_line, eta_seconds, releasable_metrics, round_line

REPO = Path(__file__).resolve().parents[2]


def _summary(**overrides: object) -> RoundSummary:
    values: dict[str, object] = dict(
        round=2, rounds=5, silos=("riverside", "st-marys"), enrolled=3, seconds=4.0,
        metrics={"num_examples": 120.0, "binary_accuracy": 0.75, "loss": 0.5123}, dp=False,
        declarations={}, elapsed_s=70.0, round_seconds=(6.0, 4.0),
    )
    values.update(overrides)
    return RoundSummary(**values)  # type: ignore[arg-type]


def test_plain_line_names_round_silos_loss_accuracy_time_and_eta() -> None:
    line = round_line(_summary())
    assert line.startswith("round 2/5: 2/3 silos (riverside, st-marys), loss 0.5123, binary_accuracy 0.75, ")
    # mean of this run's rounds (5 s) times the 3 rounds left
    assert line.endswith("4.0s, elapsed 1:10, ETA 0:15"), line


def test_dp_plan_never_shows_undeclared_record_dependent_metrics() -> None:
    """A DP silo's loss and accuracy were not released by any charged mechanism: even if they
    reach the aggregator, the progress line withholds them."""
    summary = _summary(dp=True, metrics={"loss": 0.4321, "binary_accuracy": 0.8765, "dp_steps": 12.0})
    line = round_line(summary)
    assert "0.4321" not in line and "0.8765" not in line and "loss 0" not in line
    assert "loss/accuracy not released (DP plan)" in line
    assert releasable_metrics(summary.metrics, dp=True) == {}
    assert releasable_metrics(summary.metrics, dp=False)["loss"] == 0.4321


def test_epsilon_per_hospital_is_what_each_declared() -> None:
    declarations = {"st-marys": {"epsilon_spent": 1.23456, "delta": 1e-5, "epsilon_remaining": 1.8},
                    "riverside": {"epsilon_spent_infinite": 1.0, "delta": 1e-5, "epsilon_remaining": 0.0},
                    "hillcrest": {}}
    line = round_line(_summary(dp=True, declarations=declarations))
    assert "ε spent (declared) riverside ∞, st-marys 1.235" in line
    assert "hillcrest" not in line.split("ε spent")[1]


def test_eta_and_stragglers() -> None:
    assert eta_seconds((), 3) is None
    assert eta_seconds((10.0,), 0) == 0.0
    line = round_line(_summary(round_seconds=(), stragglers=("hillcrest",)))
    assert "ETA ?" in line and "closed by the straggler grace without ['hillcrest']" in line


def test_plain_display_prints_one_line_per_event() -> None:
    stream = io.StringIO()
    display = RunDisplay(5, stream=stream)
    assert not display.interactive  # a StringIO is not a terminal
    display.say("plan demo: 5 rounds")
    display.round_completed(_summary())
    display.close()
    assert stream.getvalue().splitlines() == ["plan demo: 5 rounds", round_line(_summary())]


def test_terminal_display_draws_a_rich_bar_and_keeps_the_lines() -> None:
    stream = io.StringIO()
    display = RunDisplay(5, stream=stream, interactive=True)
    display.round_completed(_summary())
    display.say("  st-marys refused round 3: AWAITING_APPROVAL")
    display.close()
    text = stream.getvalue()
    assert "rounds" in text and "2/5" in text and "ETA 0:15" in text
    assert "loss 0.5123" in text and "AWAITING_APPROVAL" in text


def test_closing_line() -> None:
    line = closing_line("runs/p/model/saved_model", "runs/p", {"aggregator": "VERIFIED (40 entries)",
                                                               "silo:st-marys": "witnessed up to 12 entries"})
    assert line == ("done — model: runs/p/model/saved_model, reports: runs/p, audit logs: aggregator VERIFIED "
                    "(40 entries); silo:st-marys witnessed up to 12 entries")
    assert closing_line(None, "runs/p", {}) == "done — model: not exported, reports: runs/p"


def test_node_log_file_takes_c_level_stderr_and_library_warnings(tmp_path: Path) -> None:
    """What TensorFlow's C++ runtime writes to descriptor 2, and Python warnings, land in the
    log file; HealthFed's own stderr messages and log records still reach the console."""
    log_file = tmp_path / "state" / "node.log"
    script = f"""
import logging, os, sys, warnings
from pathlib import Path
from healthfed_common.json_logging import configure_logging
from healthfed_common.node_log import attach_log_file, route_noise_to_file
route_noise_to_file(Path({str(log_file)!r}))
configure_logging(False, "aggregator")
attach_log_file(Path({str(log_file)!r}))
os.write(2, b"I tensorflow/core/platform/cpu_feature_guard.cc:182] C++ noise\\n")
warnings.warn("a library's deprecation warning")
logging.getLogger("tensorflow").warning("tensorflow python noise")
logging.getLogger("absl").warning("absl noise")
logging.getLogger("healthfed.aggregator").warning("our own warning")
print("aggregator run: refused [X]: our own message", file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    assert "our own message" in console and "our own warning" in console
    for noise in ("C++ noise", "deprecation warning", "tensorflow python noise", "absl noise"):
        assert noise not in console, console
    written = log_file.read_text()
    for text in ("C++ noise", "deprecation warning", "tensorflow python noise", "absl noise", "our own warning"):
        assert text in written, written
    assert log_file.stat().st_mode & 0o777 == 0o600
