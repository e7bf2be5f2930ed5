"""Where the coordinator posts the current task and silo answers are collected.

gRPC handler threads call `poll` and `submit`; the coordinator thread calls `open`,
`wait_for_answers` and `close`. Answers are accepted only for the open task, only from its
selected silos and only once each.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
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


class TaskBoard:
    def __init__(self, idle_retry_s: float = 1.0) -> None:
        self._condition = threading.Condition()
        self._open: _OpenTask | None = None
        self._finished: PlanFinished | None = None
        self._idle_retry_s = idle_retry_s
        self.last_seen: dict[str, float] = {}

    def open(self, task: Task, selected: frozenset[str], validate: Validator) -> None:
        self.open_each({silo: task for silo in selected}, validate)

    def open_each(self, tasks: dict[str, Task], validate: Validator) -> None:
        ids = {task.task_id for task in tasks.values()}
        if len(ids) != 1:
            raise ValueError("one open task id at a time")
        with self._condition:
            self._open = _OpenTask(ids.pop(), dict(tasks), validate)
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
        """Blocks until every selected silo answered or the deadline passed."""
        with self._condition:
            while self._open is not None and len(self._open.answers) < len(self._open.tasks):
                remaining = deadline - time.time()
                if remaining <= 0:
                    break
                self._condition.wait(timeout=min(remaining, 1.0))
            return dict(self._open.answers) if self._open else {}
