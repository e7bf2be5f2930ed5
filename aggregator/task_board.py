"""Where the coordinator posts the current task and silo answers are collected.

gRPC handler threads call `poll` and `submit`; the coordinator thread calls `open`,
`collect` (or `wait_for_answers`) and `close`. Answers are accepted only for the open task,
only from its selected silos and only once each.

Every selected silo is offered the task, but the coordinator may name a subset it *awaits*:
silos it currently considers failing are offered the task without holding the round open.
A failing silo that polls and takes the task is awaited from then on, so a silo that comes
back mid-round is not cut off by the very round it rejoined.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable

from healthfed_common.wire.messages import (
    Ack,
    EvaluateResult,
    EvaluateTask,
    PlanFinished,
    Refusal,
    SecAggPhaseTask,
    SecAggReply,
    TrainResult,
    TrainTask,
    Wait,
)

Task = TrainTask | EvaluateTask | SecAggPhaseTask
Answer = TrainResult | EvaluateResult | Refusal | SecAggReply
Validator = Callable[[Any], str | None]


@dataclass
class _OpenTask:
    """One task id, with the message each selected silo receives (the same for all, or
    per silo for secure-aggregation phases)."""

    task_id: str
    tasks: dict[str, Task]
    validate: Validator
    answers: dict[str, Answer] = field(default_factory=dict)
    handed_out: set[str] = field(default_factory=set)
    awaited: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Collection:
    """What `collect` gathered and why it stopped waiting.

    `closed_by`: "all_answered" (every selected silo answered), "awaited_answered" (every
    awaited silo answered and the quorum was met; silos not awaited were not waited for),
    "grace" (the quorum was met and the straggler grace ran out), "deadline" or "closed"
    (the task was closed or replaced elsewhere). `taken`: silos that polled the task."""

    answers: dict[str, Answer]
    taken: frozenset[str]
    closed_by: str

    @property
    def closed_early(self) -> bool:
        """True when silos that had not answered were cut off before the deadline."""
        return self.closed_by in ("awaited_answered", "grace")


class TaskBoard:
    def __init__(self, idle_retry_s: float = 1.0) -> None:
        self._condition = threading.Condition()
        self._open: _OpenTask | None = None
        self._finished: PlanFinished | None = None
        self._idle_retry_s = idle_retry_s
        self.last_seen: dict[str, float] = {}

    def open(self, task: Task, selected: frozenset[str], validate: Validator, *,
             awaited: frozenset[str] | None = None) -> None:
        self.open_each({silo: task for silo in selected}, validate, awaited=awaited)

    def open_each(self, tasks: Mapping[str, Task], validate: Validator, *, awaited: frozenset[str] | None = None) -> None:
        """Posts one task id (a message per silo). `awaited` (default: every selected silo)
        are the silos `collect` waits for; the others may still take and answer the task."""
        ids = {task.task_id for task in tasks.values()}
        if len(ids) != 1:
            raise ValueError("one open task id at a time")
        waiting_for = set(tasks) if awaited is None else set(awaited) & set(tasks)
        with self._condition:
            self._open = _OpenTask(ids.pop(), dict(tasks), validate, awaited=waiting_for)
            self._condition.notify_all()

    def close(self) -> dict[str, Answer]:
        with self._condition:
            answers = dict(self._open.answers) if self._open else {}
            self._open = None
            return answers

    def finish(self, message: PlanFinished) -> None:
        with self._condition:
            self._finished = message
            self._open = None

    def poll(self, silo_id: str) -> Task | Wait | PlanFinished:
        with self._condition:
            self.last_seen[silo_id] = time.time()
            current = self._open
            if current is not None and silo_id in current.tasks and silo_id not in current.answers:
                current.handed_out.add(silo_id)
                if silo_id not in current.awaited:  # a failing silo is back: wait for its answer
                    current.awaited.add(silo_id)
                    self._condition.notify_all()
                return current.tasks[silo_id]
            if self._finished is not None:
                return self._finished
            reason = "waiting for the next round" if current is None else "not selected for this task"
            return Wait(retry_after_s=self._idle_retry_s, reason=reason)

    def submit(self, answer: Answer) -> Ack:
        with self._condition:
            current = self._open
            if current is None or answer.task_id != current.task_id:
                return Ack(False, "STALE_TASK", "no open task with this id (late or replayed answer)")
            if answer.silo_id not in current.tasks:
                return Ack(False, "NOT_SELECTED", "this silo was not selected for the task")
            if answer.silo_id in current.answers:
                return Ack(False, "DUPLICATE", "an answer from this silo was already accepted")
            problem = None if isinstance(answer, Refusal) else current.validate(answer)
            if problem:
                return Ack(False, "INVALID_RESULT", problem)
            current.answers[answer.silo_id] = answer
            self._condition.notify_all()
            return Ack(True)

    def wait_for_answers(self, deadline: float) -> dict[str, Answer]:
        """Blocks until every awaited silo answered or the deadline passed."""
        return self.collect(deadline).answers

    def collect(self, deadline: float, *, quorum: int | None = None, grace_s: float | None = None) -> Collection:
        """Blocks until the open task can be closed, and says why:

        - every selected silo answered; or
        - every awaited silo answered and at least `quorum` results (answers other than
          refusals) are in: silos not awaited are not worth waiting for then, and they are
          waited for (up to the deadline) whenever the quorum needs them; or
        - `quorum` results are in and `grace_s` more seconds passed (stragglers are cut off;
          their late answers are refused as stale once the task is closed); or
        - the deadline passed.
        """
        quorum_since: float | None = None
        with self._condition:
            while True:
                current = self._open
                if current is None:
                    return Collection({}, frozenset(), "closed")
                now = time.time()
                answered = set(current.answers)
                results = sum(1 for a in current.answers.values() if not isinstance(a, Refusal))
                enough = quorum is None or results >= quorum
                closed_by = None
                if len(answered) >= len(current.tasks):
                    closed_by = "all_answered"
                elif current.awaited <= answered and enough:
                    closed_by = "awaited_answered"
                elif now >= deadline:
                    closed_by = "deadline"
                elif quorum is not None and grace_s is not None and enough:
                    quorum_since = now if quorum_since is None else quorum_since
                    if now >= quorum_since + grace_s:
                        closed_by = "grace"
                if closed_by is not None:
                    return Collection(dict(current.answers), frozenset(current.handed_out), closed_by)
                wake = deadline if quorum_since is None or grace_s is None else min(deadline, quorum_since + grace_s)
                self._condition.wait(timeout=max(0.0, min(wake - now, 1.0)))
