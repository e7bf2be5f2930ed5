"""What `aggregator run` shows people while a plan runs: one line per round (loss and accuracy
where they may be released, the ε each hospital declared it has spent, who was in the round,
time so far and an ETA), a `rich` progress bar when stdout is a terminal, and a closing line
naming the model, the reports folder and each audit log's verdict.

Why its own module: the coordinator decides *what* happened in a round; this decides what a
person may see of it and how. The one privacy rule lives here, next to the rendering it
guards: under a DP plan, a training metric is shown only if the plan's privacy statement
declares it public (`DP_DECLARED_PUBLIC`); the silos' loss and accuracy under DP are
record-dependent values no mechanism charged, so they are withheld even if a silo sent them.
The ε shown is what each silo *declared* (its ledger's own composition), never recomputed.

Plain text (stdout not a terminal: logs, pipes, tests) is one line per event, and is the
form tests read. No TensorFlow here: the module loads in milliseconds.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

DP_DECLARED_PUBLIC: frozenset[str] = frozenset()
"""Training metrics a DP plan may show per round. The privacy statement declares the dataset
size public (and with it `dp_steps` and `expected_examples`), but those say nothing a person
watching training needs, so none is shown; a DP-released metric would be listed here."""

_FIRST = ("loss", "accuracy", "binary_accuracy", "auc")


@dataclass(frozen=True)
class RoundSummary:
    """One completed round as the coordinator saw it."""

    round: int
    rounds: int
    silos: tuple[str, ...]
    enrolled: int
    seconds: float
    metrics: Mapping[str, float]
    dp: bool
    declarations: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Latest DP spending each silo declared (its own ledger), over every round so far."""
    stragglers: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    """Seconds since this `aggregator run` started the plan (waiting for people included)."""
    round_seconds: tuple[float, ...] = ()
    """Durations of the rounds this run completed, this one included (for the ETA)."""


def releasable_metrics(metrics: Mapping[str, float], *, dp: bool) -> dict[str, float]:
    """The training metrics a person may see: all of them for a non-DP plan (the plan's
    privacy statement says nothing in it is private), only `DP_DECLARED_PUBLIC` for a DP plan."""
    allowed = {name: value for name, value in metrics.items() if not dp or name in DP_DECLARED_PUBLIC}
    order = {name: index for index, name in enumerate(_FIRST)}
    return dict(sorted(allowed.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def eta_seconds(round_seconds: Sequence[float], remaining: int) -> float | None:
    """Mean round time of this run times the rounds left; None before any round finished."""
    if remaining <= 0:
        return 0.0
    if not round_seconds:
        return None
    return sum(round_seconds) / len(round_seconds) * remaining


def clock(seconds: float | None) -> str:
    """`0:42`, `12:05`, `1:02:03`; `?` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = int(round(max(seconds, 0.0)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.4g}"


def epsilon_spent(declarations: Mapping[str, Mapping[str, float]]) -> str:
    """`st-marys 1.2, riverside ∞` from what each silo declared; empty when none declared."""
    parts = []
    for silo, declared in sorted(declarations.items()):
        if declared.get("epsilon_spent_infinite"):
            parts.append(f"{silo} ∞")
        elif "epsilon_spent" in declared:
            parts.append(f"{silo} {_number(float(declared['epsilon_spent']))}")
    return ", ".join(parts)


def round_line(summary: RoundSummary) -> str:
    """The plain-text line for one round (what logs and tests read)."""
    shown = releasable_metrics(summary.metrics, dp=summary.dp)
    if shown:
        training = ", ".join(f"{name} {_number(value)}" for name, value in shown.items())
    elif summary.dp:
        training = "loss/accuracy not released (DP plan)"
    else:
        training = "no training metrics released"
    spent = epsilon_spent(summary.declarations)
    eta = eta_seconds(summary.round_seconds, summary.rounds - summary.round)
    line = (f"round {summary.round}/{summary.rounds}: {len(summary.silos)}/{summary.enrolled} silos "
            f"({', '.join(summary.silos)}), {training}"
            + (f", ε spent (declared) {spent}" if spent else "")
            + f", {summary.seconds:.1f}s, elapsed {clock(summary.elapsed_s)}, ETA {clock(eta)}")
    if summary.stragglers:
        line += (f"; closed by the straggler grace without {list(summary.stragglers)} "
                 "(their late results are discarded)")
    return line


def closing_line(model_path: str | None, reports_dir: str, audit_verdicts: Mapping[str, str]) -> str:
    """The run's last line: where the model and reports are, and each audit log's verdict."""
    parts = [f"model: {model_path}" if model_path else "model: not exported", f"reports: {reports_dir}"]
    if audit_verdicts:
        parts.append("audit logs: " + "; ".join(f"{name} {verdict}" for name, verdict in sorted(audit_verdicts.items())))
    return "done — " + ", ".join(parts)


class RunDisplay:
    """Prints a run's messages and rounds: plain lines, or lines above a `rich` progress bar
    when `interactive` (default: stdout is a terminal)."""

    def __init__(self, rounds: int, *, stream: IO[str] | None = None, interactive: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._interactive = self._stream.isatty() if interactive is None else interactive
        self._rounds = rounds
        self._bar: Any = None
        self._task: Any = None

    @property
    def interactive(self) -> bool:
        return self._interactive

    def _progress_bar(self) -> Any:
        """Started on the first round, so the lines before it (plan, waiting for people) are
        plain and the bar appears only once training is under way."""
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            console = Console(file=self._stream)
            self._bar = Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), console=console, transient=False)
            self._task = self._bar.add_task("rounds", total=self._rounds, status="")
            self._bar.start()
        return self._bar

    def say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self._stream, flush=True)

    def round_completed(self, summary: RoundSummary) -> None:
        line = round_line(summary)
        if not self._interactive:
            self.say(line)
            return
        bar = self._progress_bar()
        bar.console.print(line, markup=False, highlight=False)
        eta = eta_seconds(summary.round_seconds, summary.rounds - summary.round)
        bar.update(self._task, completed=summary.round,
                   status=f"elapsed {clock(summary.elapsed_s)}, ETA {clock(eta)}")

    def close(self) -> None:
        """Stops the bar (leaving it drawn) so later lines print below it."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


RoundDisplayHook = Callable[[RoundSummary], None]
