"""How long a round waits, on the real TaskBoard with silos answering from other threads (as
the gRPC handlers do): the straggler grace, failing silos that are not waited for, and their
return; and the failing/rejoined bookkeeping of `aggregator.participation`."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from aggregator.metrics import AggregatorMetrics
from aggregator.participation import Participation, outcome_of
from aggregator.task_board import TaskBoard
from healthfed_common.errors import PlanInvalid
from healthfed_common.plan import parse_plan
from healthfed_common.wire.messages import Refusal, TrainResult, TrainTask, Wait
from tests.federation.conftest import toy_plan

SILOS = frozenset({"north", "south", "east"})


def _task(task_id: str = "t-r1-a1") -> TrainTask:
    return TrainTask(task_id, b"{}", "p" * 64, 1, 1, "fingerprint", (np.zeros(2, np.float32),))


def _result(silo: str, task_id: str = "t-r1-a1") -> TrainResult:
    return TrainResult(silo, task_id, "p" * 64, 1, (np.ones(1, np.float32),), ())


def _refusal(silo: str, code: str = "FEATURE_NOT_ALLOWED", task_id: str = "t-r1-a1") -> Refusal:
    return Refusal(silo, task_id, "p" * 64, 1, code, "safe message")


def _answer_later(board: TaskBoard, delay_s: float, answer: TrainResult | Refusal) -> threading.Thread:
    """A silo that polls the task now and submits after `delay_s` (training time)."""

    def silo() -> None:
        assert isinstance(board.poll(answer.silo_id), TrainTask)
        time.sleep(delay_s)
        board.submit(answer)

    thread = threading.Thread(target=silo, daemon=True)
    thread.start()
    return thread


def test_the_grace_closes_a_round_soon_after_the_minimum_and_refuses_the_straggler() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None)
    _answer_later(board, 0.05, _result("north"))
    _answer_later(board, 0.1, _result("south"))
    _answer_later(board, 30, _result("east"))  # took the task, answers far too late
    began = time.time()
    collected = board.collect(began + 20, quorum=2, grace_s=0.5)
    waited = time.time() - began
    answers = board.close()
    assert collected.closed_by == "grace" and collected.closed_early
    assert 0.5 <= waited < 3, f"closed after {waited:.2f}s"
    assert set(answers) == {"north", "south"}
    assert collected.taken == SILOS
    late = board.submit(_result("east"))
    assert not late.accepted and late.code == "STALE_TASK"


def test_without_a_grace_the_round_waits_for_every_silo_until_the_deadline() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None)
    _answer_later(board, 0.05, _result("north"))
    _answer_later(board, 0.05, _result("south"))
    began = time.time()
    collected = board.collect(began + 1.5, quorum=2, grace_s=None)
    assert collected.closed_by == "deadline"
    assert time.time() - began >= 1.5
    assert set(collected.answers) == {"north", "south"}


def test_refusals_do_not_count_towards_the_minimum_that_starts_the_grace() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None)
    _answer_later(board, 0.05, _result("north"))
    _answer_later(board, 0.05, _refusal("south"))
    began = time.time()
    collected = board.collect(began + 1.5, quorum=2, grace_s=0.2)
    assert collected.closed_by == "deadline", "one result and one refusal are not the minimum of two"


def test_a_failing_silo_is_not_waited_for_once_the_others_meet_the_minimum() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None, awaited=frozenset({"north", "south"}))
    _answer_later(board, 0.05, _result("north"))
    _answer_later(board, 0.1, _result("south"))
    began = time.time()
    collected = board.collect(began + 20, quorum=2)
    assert collected.closed_by == "awaited_answered"
    assert time.time() - began < 3
    assert "east" not in collected.taken


def test_a_failing_silo_is_waited_for_when_the_minimum_needs_it() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None, awaited=frozenset({"north", "south"}))
    _answer_later(board, 0.05, _result("north"))
    _answer_later(board, 0.05, _refusal("south"))
    _answer_later(board, 0.8, _result("east"))
    collected = board.collect(time.time() + 20, quorum=2)
    assert collected.closed_by == "all_answered"
    assert isinstance(collected.answers["east"], TrainResult)


def test_a_failing_silo_that_takes_the_task_is_waited_for_again() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None, awaited=frozenset({"north", "south"}))
    _answer_later(board, 0.8, _result("east"))  # came back: polls first, trains a while
    _answer_later(board, 0.05, _result("north"))
    _answer_later(board, 0.05, _result("south"))
    collected = board.collect(time.time() + 20, quorum=2)
    assert collected.closed_by == "all_answered"
    assert set(collected.answers) == SILOS


def test_secure_aggregation_phases_still_wait_for_everyone_addressed() -> None:
    board = TaskBoard()
    board.open(_task(), SILOS, lambda _: None)
    assert isinstance(board.poll("north"), TrainTask)
    assert board.submit(_result("north")).accepted
    assert isinstance(board.poll("north"), Wait), "an answered silo is not offered the task again"
    began = time.time()
    assert set(board.wait_for_answers(began + 1.0)) == {"north"}
    assert time.time() - began >= 1.0


def test_a_silo_becomes_failing_after_the_configured_misses_and_rejoins_when_it_answers() -> None:
    participation = Participation(SILOS, failing_after=2)
    assert participation.note("east", "no_answer") is None
    assert participation.note("north", "result") is None
    change = participation.note("east", "late")
    assert change is not None and (change.silo, change.change, change.consecutive_misses) == ("east", "failing", 2)
    assert participation.awaited() == {"north", "south"}
    assert participation.note("east", "no_answer") is None, "reported once, not every round"
    back = participation.note("east", "result")
    assert back is not None and (back.change, back.consecutive_misses) == ("rejoined", 3)
    assert participation.awaited() == SILOS


def test_policy_refusals_are_answers_and_internal_errors_are_failures() -> None:
    participation = Participation(SILOS, failing_after=2)
    for _ in range(5):
        assert participation.note("south", outcome_of(_refusal("south"), took_task=True, closed_early=False)) is None
    error = _refusal("north", "SILO_INTERNAL_ERROR")
    assert participation.note("north", outcome_of(error, took_task=True, closed_early=False)) is None
    assert participation.note("north", outcome_of(error, took_task=True, closed_early=False)).change == "failing"
    assert outcome_of(None, took_task=True, closed_early=True) == "late"
    assert outcome_of(None, took_task=False, closed_early=True) == "no_answer"
    assert outcome_of(None, took_task=True, closed_early=False) == "no_answer"


def test_a_resumed_plan_remembers_who_was_failing_and_never_reports_without_a_threshold() -> None:
    rows = [("east", "no_answer", ""), ("east", "failing", ""), ("north", "refused", "SILO_INTERNAL_ERROR"),
            ("east", "late", "")]
    resumed = Participation(SILOS, failing_after=2)
    resumed.replay(rows)
    assert resumed.failing == {"east"}
    assert resumed.misses("north") == 1
    patient = Participation(SILOS, failing_after=None)
    patient.replay(rows * 10)
    assert patient.failing == frozenset() and patient.awaited() == SILOS


def test_plan_round_settings_have_compatible_defaults_and_are_checked() -> None:
    plan = parse_plan(toy_plan())
    assert (plan.max_round_attempts, plan.straggler_grace_s, plan.failing_silo_rounds) == (3, None, 3)
    tuned = parse_plan(toy_plan(max_round_attempts=1, straggler_grace_s=5, failing_silo_rounds=None))
    assert tuned.plan_hash != plan.plan_hash
    with pytest.raises(PlanInvalid, match="straggler_grace_s"):
        parse_plan(toy_plan(deadline_s=10, straggler_grace_s=10))
    with pytest.raises(PlanInvalid, match="max_round_attempts"):
        parse_plan(toy_plan(max_round_attempts=0))
    with pytest.raises(PlanInvalid, match="failing_silo_rounds"):
        parse_plan(toy_plan(failing_silo_rounds=0))


def test_failing_silos_are_exported_as_metrics_for_enrolled_silos_only() -> None:
    metrics = AggregatorMetrics("cardiology", enrolled=SILOS)
    metrics.silo_failing("east", True)
    metrics.silo_failing("north", True)
    metrics.silo_failing("north", False)
    metrics.silo_failing("intruder", True)
    registry = metrics.registry
    assert registry.get_sample_value("healthfed_aggregator_silos_failing") == 1
    assert registry.get_sample_value("healthfed_aggregator_silo_failing", {"silo": "east"}) == 1
    assert registry.get_sample_value("healthfed_aggregator_silo_failing", {"silo": "north"}) == 0
    assert registry.get_sample_value("healthfed_aggregator_silo_failing", {"silo": "intruder"}) is None
