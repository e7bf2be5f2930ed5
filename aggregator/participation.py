"""Which enrolled silos the rounds of a plan wait for.

A silo that lets `failing_silo_rounds` consecutive train offers pass without a result (it
never answered before the round closed, or it answered SILO_INTERNAL_ERROR) is *failing*:
the coordinator reports it once and stops holding rounds open for it (see
`TaskBoard.collect`). It is still offered every round, so it rejoins by itself: the board
waits for it again the moment it takes a task, and the first answer it gives makes it
*rejoined* here. A policy refusal (AWAITING_APPROVAL, FEATURE_NOT_ALLOWED...) is an answer
from a live silo, not a failure.

This module only counts; reporting (progress line, state store, audit log, metrics, run
report) is the coordinator's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from healthfed_common.wire.messages import Refusal

Outcome = Literal["result", "refused", "error", "no_answer", "late"]
Change = Literal["failing", "rejoined"]

# Refusal codes that mean the silo broke while running the task, rather than decided not to.
ERROR_CODES = frozenset({"SILO_INTERNAL_ERROR"})

_MISSES: frozenset[str] = frozenset({"error", "no_answer", "late"})


@dataclass(frozen=True)
class StatusChange:
    """One silo became failing, or answered again after it was failing."""

    silo: str
    change: Change
    consecutive_misses: int


class Participation:
    """Consecutive misses per silo and the set of failing silos, for one plan."""

    def __init__(self, silos: Iterable[str], failing_after: int | None) -> None:
        self._silos = frozenset(silos)
        self._failing_after = failing_after
        self._misses = {silo: 0 for silo in self._silos}
        self._failing: set[str] = set()

    @property
    def failing(self) -> frozenset[str]:
        return frozenset(self._failing)

    def awaited(self) -> frozenset[str]:
        """The silos a round holds itself open for."""
        return self._silos - self._failing

    def misses(self, silo: str) -> int:
        return self._misses.get(silo, 0)

    def note(self, silo: str, outcome: Outcome) -> StatusChange | None:
        """Records one offer's outcome for `silo`; returns the status change it caused."""
        if silo not in self._silos:
            return None
        if outcome in _MISSES:
            self._misses[silo] += 1
            threshold = self._failing_after
            if threshold is not None and silo not in self._failing and self._misses[silo] >= threshold:
                self._failing.add(silo)
                return StatusChange(silo, "failing", self._misses[silo])
            return None
        missed, self._misses[silo] = self._misses[silo], 0
        if silo in self._failing:
            self._failing.discard(silo)
            return StatusChange(silo, "rejoined", missed)
        return None

    def replay(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Rebuilds the counters from the (silo, outcome, code) rows a resumed plan recorded
        in the state store, so an aggregator restart neither forgets a failing silo nor
        reports it twice. Rows of other kinds (the "failing"/"rejoined" notes) are skipped."""
        for silo, outcome, code in rows:
            if outcome == "refused":
                self.note(silo, "error" if code in ERROR_CODES else "refused")
            elif outcome in ("result", "no_answer", "late"):
                self.note(silo, outcome)  # type: ignore[arg-type]


def outcome_of(answer: object, *, took_task: bool, closed_early: bool) -> Outcome:
    """Classifies one silo's answer to a train offer. None means it did not answer in time:
    "late" when it had taken the task and the round closed before its deadline (a
    straggler cut off by the grace), "no_answer" otherwise."""
    if answer is None:
        return "late" if took_task and closed_early else "no_answer"
    if isinstance(answer, Refusal):
        return "error" if answer.code in ERROR_CODES else "refused"
    return "result"
