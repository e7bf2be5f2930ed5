"""Runs one plan to its end: initialize or resume, then round after round prepare → offer →
collect → aggregate → update → checkpoint, then a final evaluation and the model export.

How long a round waits is the plan's: every offer waits at most `round_deadline_s`; with
`straggler_grace_s` it closes that much after `min_silos_per_round` results arrived; silos
that `failing_silo_rounds` offers in a row went unanswered are not waited for (see
`aggregator.participation`) and are offered each round again until they answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.aggregation import aggregate_round, expected_result_problem
from aggregator.errors import AggregatorError
from aggregator.model_card import SAVED_MODEL_DIR, build_card, write_card
from aggregator.participation import Participation, StatusChange, outcome_of
from aggregator.progress import RoundDisplayHook, RoundSummary, round_line
from aggregator.secure_sum import SecureSumAborted, cohort_verifier, run_secure_sum
from aggregator.state_store import StateBackend
from healthfed_common.secure_round import from_vectors, session_params, state_digest
from aggregator.task_board import Collection, TaskBoard
from healthfed_common.learning_process import FederatedComputations, build_federated_computations, build_keras_model
from healthfed_common.plan import Plan
from healthfed_common.wire.messages import (
    EvaluateResult,
    EvaluateTask,
    PlanFinished,
    Refusal,
    SecAggSession,
    TrainResult,
    TrainTask,
)

log = logging.getLogger("healthfed.aggregator")


WAITING_FOR_PEOPLE = frozenset({"AWAITING_APPROVAL", "APPROVAL_EXPIRED", "PRIVACY_BUDGET_NOT_SET"})
"""Refusal codes that mean a person at the hospital has yet to act (not a failure)."""


def _command_for(code: str, plan: Plan) -> str:
    """The command a hospital's person runs to clear `code` for this plan."""
    if code == "PRIVACY_BUDGET_NOT_SET":
        epsilon = plan.dp.target_epsilon if plan.dp is not None else "EPSILON"
        delta = plan.dp.target_delta if plan.dp is not None else "DELTA"
        return (f"silo-node ledger set-budget {plan.dataset} --epsilon <total for this dataset, at least {epsilon}> "
                f"--delta {delta} --by <your name> --state-dir <state folder>")
    return (f"silo-node plans show {plan.plan_hash[:12]} --state-dir <state folder>, then "
            f"silo-node plans approve {plan.plan_hash[:12]} --by <your name> --state-dir <state folder>")


class PlanFailed(AggregatorError, RuntimeError):
    """A round could not gather the plan's minimum of silos within its attempts."""


@dataclass
class RunReport:
    plan_hash: str
    rounds_completed: int = 0
    round_seconds: list[float] = field(default_factory=list)
    round_metrics: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    refusals: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_round: int = 0
    dp_declarations: dict[str, dict[str, float]] = field(default_factory=dict)
    # silos reported failing or rejoined (round, attempt, silo, status, consecutive_misses)
    silo_status: list[dict[str, Any]] = field(default_factory=list)
    failing_silos: list[str] = field(default_factory=list)


ProgressHook = Callable[[str], None]
# (round number, that round's `RunReport.round_metrics` entry, DP spending declared by the
# silos counted in it). Called before the round is checkpointed: a crash in between re-runs
# the round and the hook sees it again, so it must replace what it wrote for that round.
RoundHook = Callable[[int, dict[str, Any], dict[str, dict[str, float]]], None]


# Released per-silo values that are counts, not metrics of a model on records: averaging them
# across hospitals weighted by test size would print a number nobody chose.
NOT_AVERAGED = ("num_examples", "personalized_fine_tuning_epochs")


def evaluation_aggregate(per_silo: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The federation's evaluation over the silos' released metrics: each metric's mean
    weighted by held-out records, the plain mean of the per-silo accuracies (global and, under
    personalisation, fine-tuned), and the record count. The epochs each silo chose for its
    fine-tuning stay per silo (personalization_summary)."""
    total = sum(m["num_examples"] for m in per_silo.values())
    names = sorted({k for m in per_silo.values() for k in m if k not in NOT_AVERAGED})
    aggregate: dict[str, Any] = {
        name: sum(m[name] * m["num_examples"] for m in per_silo.values()) / total for name in names
    } if total else {}
    if per_silo:
        aggregate["mean_per_silo_accuracy"] = float(np.mean([m.get("accuracy", np.nan) for m in per_silo.values()]))
        if any("personalized_accuracy" in m for m in per_silo.values()):
            # the plan's personalisation: each hospital's fine-tuned copy, beside the global model
            aggregate["mean_per_silo_personalized_accuracy"] = float(
                np.mean([m.get("personalized_accuracy", np.nan) for m in per_silo.values()]))
    aggregate["num_examples"] = total
    return aggregate


def personalization_summary(spec: dict[str, Any], per_silo: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each hospital's global-model metrics beside those of its own fine-tuned copy (which
    never left the silo; only these metrics did), from the silos' released evaluation."""
    prefix = "personalized_"
    rows: dict[str, Any] = {}
    for silo, metrics in sorted(per_silo.items()):
        personal = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
        rows[silo] = {"global": {k: v for k, v in metrics.items() if not k.startswith(prefix) and k != "num_examples"},
                      "personalized": personal, "num_examples": metrics.get("num_examples", 0)}
    return {**spec, "per_silo": rows}


class Coordinator:
    def __init__(
        self,
        plan: Plan,
        board: TaskBoard,
        store: StateBackend,
        silos: frozenset[str],
        *,
        progress: ProgressHook = print,
        audit: Any = None,
        metrics: Any = None,
        on_round: RoundHook | None = None,
        approval_wait_s: float = 0.0,
        approval_poll_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        plan_cache_dir: Path | None = None,
        on_round_summary: RoundDisplayHook | None = None,
    ) -> None:
        """`approval_wait_s`: how long a round waits for hospitals whose data steward has not
        approved the plan yet (or whose dataset has no privacy budget yet) before the offer
        counts as a failed attempt; the round is offered again every `approval_poll_s`.
        `plan_cache_dir` (STATE_DIR/plan-cache): traced plans kept so a restart skips tracing.
        `on_round_summary`: shows each completed round (`aggregator.progress.RunDisplay`);
        without it the round's plain line goes to `progress`."""
        self._on_round_summary = on_round_summary
        self._run_started = time.time()
        self._round_began = self._run_started
        self._approval_wait_s = approval_wait_s
        self._approval_poll_s = approval_poll_s
        self._sleep = sleep
        self._announced: set[tuple[str, str]] = set()
        self._waiting_said: tuple[str, float] | None = None
        self._metrics = metrics
        self._on_round = on_round
        self.plan = plan
        self._board = board
        self._store = store
        self._silos = silos
        self._progress = progress
        self._max_attempts = plan.max_round_attempts
        if plan.secure_aggregation.protocol != "none":
            # Under secure aggregation the plan's cohort is who takes part: silos check it, so
            # offering the round to anyone else would only collect refusals.
            cohort = frozenset(plan.cohort_ids)
            if len(cohort) < 2:
                raise PlanFailed("the plan uses secure aggregation but names no cohort (at least 2 enrolled silos "
                                 "with their signing keys); `aggregator run` fills it from the enrolment records")
            unknown = sorted(cohort - silos)
            if unknown:
                raise PlanFailed(f"the plan's cohort names silos this federation has not enrolled: {unknown}")
            silos = cohort
        self._silos = silos
        self._verify = cohort_verifier(plan) if plan.cohort else None
        self._participation = Participation(silos, plan.failing_silo_rounds)
        self._audit = audit
        self.computations: FederatedComputations = build_federated_computations(plan, plan_cache_dir)
        self.report = RunReport(plan.plan_hash)

    def _record(self, kind: str, **detail: Any) -> None:
        if self._audit is not None:
            outcome = detail.pop("outcome", "success")
            self._audit.record(kind, actor="aggregator", outcome=outcome, detail=detail)

    def _task_id(self, kind: str, round_number: int, attempt: int) -> str:
        return f"{self.plan.plan_hash[:16]}-{kind}-r{round_number}-a{attempt}"

    def run(self, export_dir: Path | None = None) -> RunReport:
        plan, comps = self.plan, self.computations
        plan_json = plan.canonical_bytes()
        self._run_started = time.time()
        self._store.start_plan(plan.plan_hash, plan_json)
        checkpoint = self._store.latest_checkpoint(plan.plan_hash)
        if checkpoint is None:
            state = comps.initialize()
            start = 1
        else:
            state, start = checkpoint.state, checkpoint.round + 1
            self.report.resumed_from_round = checkpoint.round
            self._progress(f"resuming plan {plan.plan_hash[:12]} after round {checkpoint.round}")
        self._resume_participation()
        self.report.rounds_completed = start - 1
        self._progress(
            f"plan {plan.name} ({plan.plan_hash[:12]}): {plan.rounds} rounds, {len(self._silos)} silos enrolled, "
            f"minimum {plan.min_silos_per_round} per round; secure aggregation: "
            + (f"{plan.secure_aggregation.protocol} (the aggregator learns only the sum)"
               if plan.secure_aggregation.protocol != "none"
               else "none (integer parts are summed IN PLAIN by the aggregator)")
        )
        self._wait_for_silos()
        try:
            for round_number in range(start, plan.rounds + 1):
                began = self._round_began = time.time()
                state = self._run_round(round_number, state, plan_json)
                if self._on_round is not None:
                    record = self.report.round_metrics[-1]
                    declared = {s: self.report.dp_declarations[s] for s in record["silos"]
                                if s in self.report.dp_declarations}
                    self._on_round(round_number, record, declared)
                self._store.save_checkpoint(plan.plan_hash, round_number, state)
                self.report.rounds_completed = round_number
                self.report.round_seconds.append(time.time() - began)
                if self._metrics is not None:
                    silos = len(self.report.round_metrics[-1]["silos"]) if self.report.round_metrics else 0
                    self._metrics.round_completed(time.time() - began, silos=silos, round_number=round_number)
            self.report.evaluation = self._evaluate(state, plan_json)
            if export_dir is not None:
                self.report.model_path = str(self._export(state, export_dir))
        except PlanFailed as failure:
            self._store.finish_plan(plan.plan_hash, "failed", str(failure))
            self._board.finish(PlanFinished(plan.plan_hash, self.report.rounds_completed))
            raise
        self._store.finish_plan(plan.plan_hash, "completed")
        self._board.finish(PlanFinished(plan.plan_hash, self.report.rounds_completed))
        return self.report

    def _wait_for_silos(self, timeout_s: float = 900.0) -> None:
        """Round deadlines count from each offer, so the first round waits until enough
        silos have connected at all (a silo that never connects is reported, not waited on
        forever)."""
        needed = self.plan.min_silos_per_round
        deadline = time.time() + timeout_s
        announced = False
        while time.time() < deadline:
            seen = set(self._board.last_seen) & self._silos
            if len(seen) >= needed:
                return
            if not announced:
                self._progress(f"waiting for at least {needed} of {len(self._silos)} silos to connect")
                announced = True
            time.sleep(0.5)
        missing = sorted(self._silos - set(self._board.last_seen))
        self._progress(f"only {len(self._silos) - len(missing)} silos connected within {timeout_s:.0f}s; never seen: {missing}")

    def _resume_participation(self) -> None:
        """A resumed plan continues the failing counts of its earlier run."""
        self._participation.replay((row[2], row[3], row[4]) for row in self._store.outcomes(self.plan.plan_hash))
        self.report.failing_silos = sorted(self._participation.failing)
        for silo in self.report.failing_silos:
            self._progress(f"  {silo} was failing when the plan stopped; rounds do not wait for it until it answers")
            if self._metrics is not None:
                self._metrics.silo_failing(silo, True)

    def _collect(self, task: TrainTask | EvaluateTask, validate: Callable[[Any], str | None], quorum: int) -> Collection:
        """Offers `task` to every enrolled silo and waits for the ones not failing (see
        `TaskBoard.collect` for when it stops). Answers accepted until `close` count."""
        self._board.open(task, self._silos, validate, awaited=self._participation.awaited())
        collected = self._board.collect(
            time.time() + self.plan.round_deadline_s, quorum=quorum, grace_s=self.plan.straggler_grace_s
        )
        return replace(collected, answers=self._board.close())

    def _run_round(self, round_number: int, state: list[NDArray[Any]], plan_json: bytes) -> list[NDArray[Any]]:
        plan, comps = self.plan, self.computations
        secure = plan.secure_aggregation.protocol != "none"
        attempt, offer = 1, 0
        approval_deadline = time.time() + self._approval_wait_s
        while attempt <= self._max_attempts:
            began = time.time()
            offer += 1
            client_input = comps.prepare(state)
            params = (session_params(plan, comps, round_number, attempt, state_digest(client_input))
                      if secure else None)
            task = TrainTask(
                task_id=self._task_id("train", round_number, attempt) + (f"-o{offer}" if offer > 1 else ""),
                plan_json=plan_json,
                plan_hash=plan.plan_hash, round=round_number, attempt=attempt,
                fingerprint=comps.fingerprint, client_input=tuple(client_input),
                secagg=None if params is None else SecAggSession(
                    params.session_id, params.participants, params.threshold, params.bitwidths,
                    params.vector_lengths, params.neighbours or 0),
            )
            # Closing early below the secure-aggregation threshold could only abort the sum.
            quorum = plan.min_silos_per_round if params is None else max(plan.min_silos_per_round, params.threshold)
            collected = self._collect(task, lambda r: expected_result_problem(comps, r, secure=secure), quorum)
            answers = collected.answers
            results = [a for a in answers.values() if isinstance(a, TrainResult)]
            stragglers = self._note_answers(round_number, attempt, collected)
            secure_sums = None
            if params is not None and len(results) >= plan.min_silos_per_round:
                try:
                    sums, counted = run_secure_sum(
                        self._board, params, results, verify=self._verify, plan_hash=plan.plan_hash,
                        round_number=round_number,
                        task_prefix=task.task_id, deadline_s=plan.round_deadline_s, progress=self._progress,
                    )
                except SecureSumAborted as aborted:
                    self._progress(f"round {round_number} attempt {attempt}: secure aggregation aborted, nothing "
                                   f"revealed ({aborted.error.code}: {aborted.error})")
                    if aborted.masked:
                        # Silos that masked their update refuse to mask it again (one unmasking per
                        # update), so re-offering this round could only collect refusals.
                        self._record("round.completed", outcome="serious_failure", plan_hash=plan.plan_hash,
                                     round=round_number, reason=f"secure aggregation aborted after {aborted.masked} "
                                     "masked their updates")
                        raise PlanFailed(
                            f"plan {plan.plan_hash[:12]} stopped at round {round_number}: secure aggregation aborted "
                            f"after {', '.join(aborted.masked)} masked their updates; an update is never masked in "
                            "two sessions, so this round cannot be offered again (start the plan anew)"
                        ) from None
                    results = []
                else:
                    results = [r for r in results if r.silo_id in counted]
                    secure_sums = from_vectors(comps, sums)
            if len(results) >= plan.min_silos_per_round:
                outcome = aggregate_round(comps, state, sorted(results, key=lambda r: r.silo_id), secure_sums)
                for result in results:
                    if result.declarations:
                        self.report.dp_declarations[result.silo_id] = dict(result.declarations)
                        self._store.record_declaration(plan.plan_hash, round_number, result.silo_id, dict(result.declarations))
                seconds = time.time() - began
                self.report.round_metrics.append(
                    {"round": round_number, "attempt": attempt, "silos": sorted(r.silo_id for r in results),
                     "seconds": round(seconds, 3), "aggregate": outcome.metrics, "per_silo": outcome.per_silo,
                     "stragglers": stragglers}
                )
                self._record("round.completed", plan_hash=plan.plan_hash, round=round_number,
                             silos=sorted(r.silo_id for r in results))
                self._show_round(round_number, sorted(r.silo_id for r in results), seconds, outcome.metrics,
                                 stragglers)
                return outcome.state
            waiting = {s: a for s, a in answers.items() if isinstance(a, Refusal) and a.code in WAITING_FOR_PEOPLE}
            if (waiting and len(results) + len(waiting) >= plan.min_silos_per_round
                    and time.time() < approval_deadline):
                # A hospital's person has yet to act: a state, not a failed attempt. The same
                # attempt is offered again (silos that trained re-send the same update).
                self._announce_waiting(round_number, waiting, approval_deadline)
                self._sleep(self._approval_poll_s)
                continue
            missing = sorted(self._silos - set(answers))
            refused = {s: a.code for s, a in answers.items() if isinstance(a, Refusal)}
            message = (
                f"round {round_number} attempt {attempt}/{self._max_attempts}: {len(results)} of "
                f"{len(self._silos)} silos returned results, the plan needs {plan.min_silos_per_round}"
                + (f"; refused: {refused}" if refused else "")
                + ((f"; no answer before the {plan.round_deadline_s:.0f}s deadline from {missing}"
                    if collected.closed_by == "deadline" else f"; not waited for: {missing}") if missing else "")
            )
            self._progress(message)
            self._record("round.completed", outcome="serious_failure", plan_hash=plan.plan_hash,
                         round=round_number, reason=message)
            attempt += 1
        raise PlanFailed(
            f"plan {plan.plan_hash[:12]} stopped at round {round_number}: fewer than "
            f"{plan.min_silos_per_round} silos in {self._max_attempts} attempts (see messages above)"
        )

    def _show_round(self, round_number: int, silos: list[str], seconds: float, metrics: dict[str, float],
                    stragglers: list[str]) -> None:
        """The round's progress for people (what may be shown is `aggregator.progress`'s rule)."""
        now = time.time()
        summary = RoundSummary(
            round=round_number, rounds=self.plan.rounds, silos=tuple(silos), enrolled=len(self._silos),
            seconds=seconds, metrics=dict(metrics), dp=self.plan.dp is not None,
            declarations={s: dict(d) for s, d in self.report.dp_declarations.items()},
            stragglers=tuple(stragglers), elapsed_s=now - self._run_started,
            round_seconds=(*self.report.round_seconds, now - self._round_began),
        )
        if self._on_round_summary is not None:
            self._on_round_summary(summary)
        else:
            self._progress(round_line(summary))

    def _announce_waiting(self, round_number: int, waiting: dict[str, Refusal], deadline: float) -> None:
        """Says once per silo and reason who the plan is waiting for and the exact command that
        hospital's person must run."""
        for silo, refusal in sorted(waiting.items()):
            if (silo, refusal.code) in self._announced:
                continue
            self._announced.add((silo, refusal.code))
            self._progress(f"  waiting for {silo}: {refusal.code} — {refusal.message}")
            self._progress(f"    at {silo}, run: {_command_for(refusal.code, self.plan)}")
        left = max(0.0, deadline - time.time())
        pending = ", ".join(sorted(waiting))
        said = (pending, time.time())
        if self._waiting_said is not None and self._waiting_said[0] == pending and said[1] - self._waiting_said[1] < 60:
            return  # the same people: repeated once a minute, not at every re-offer
        self._waiting_said = said
        self._progress(f"round {round_number}: waiting for people at {pending} (up to {left / 60:.0f} more minutes; "
                       "the round starts as soon as they act)")

    def _note_answers(self, round_number: int, attempt: int, collected: Collection) -> list[str]:
        """Records each silo's outcome of one train offer; returns the stragglers (silos
        that took the task but were cut off when the round closed early)."""
        answers, stragglers = collected.answers, []
        for silo_id in sorted(self._silos):
            answer = answers.get(silo_id)
            outcome = outcome_of(answer, took_task=silo_id in collected.taken, closed_early=collected.closed_early)
            if self._metrics is not None and (answer is None or isinstance(answer, Refusal)):
                self._metrics.refusal(answer.code) if answer is not None else self._metrics.no_answer()
            if isinstance(answer, Refusal):
                self._store.record_outcome(self.plan.plan_hash, round_number, attempt, silo_id, "refused",
                                           answer.code, answer.message)
                self.report.refusals.append(
                    {"round": round_number, "silo": silo_id, "code": answer.code, "message": answer.message}
                )
                if (silo_id, answer.code) not in self._announced:  # a pending person is said once, not every 5 s
                    self._progress(f"  {silo_id} refused round {round_number}: {answer.code} — {answer.message}")
                self._record("round.refused", outcome="minor_failure", plan_hash=self.plan.plan_hash,
                             round=round_number, silo=silo_id, code=answer.code)
            elif answer is None:
                self._store.record_outcome(self.plan.plan_hash, round_number, attempt, silo_id, outcome)
                if outcome == "late":
                    stragglers.append(silo_id)
            else:
                self._store.record_outcome(self.plan.plan_hash, round_number, attempt, silo_id, "result")
            change = self._participation.note(silo_id, outcome)
            if change is not None:
                self._report_status(round_number, attempt, change)
        return stragglers

    def _report_status(self, round_number: int, attempt: int, change: StatusChange) -> None:
        """A silo became failing or rejoined: progress line, state store, audit log,
        metrics and run report say so."""
        silo, misses = change.silo, change.consecutive_misses
        if change.change == "failing":
            message = (f"{silo} is failing: no result in {misses} consecutive round offers; rounds no longer "
                       "wait for it (it is offered every round and rejoins when it answers)")
        else:
            message = f"{silo} answered again after {misses} missed round offers and rejoins the rounds"
        self._progress(f"  {message}")
        self._store.record_outcome(self.plan.plan_hash, round_number, attempt, silo, change.change, "", message)
        self._record(f"silo.{change.change}", outcome="minor_failure" if change.change == "failing" else "success",
                     plan_hash=self.plan.plan_hash, round=round_number, silo=silo, consecutive_misses=misses)
        self.report.silo_status.append(
            {"round": round_number, "attempt": attempt, "silo": silo, "status": change.change,
             "consecutive_misses": misses}
        )
        self.report.failing_silos = sorted(self._participation.failing)
        if self._metrics is not None:
            self._metrics.silo_failing(silo, change.change == "failing")

    def _evaluate(self, state: list[NDArray[Any]], plan_json: bytes) -> dict[str, Any]:
        weights = self.computations.model_weights(state)
        task = EvaluateTask(self._task_id("eval", self.plan.rounds, 1), plan_json, self.plan.plan_hash, tuple(weights))
        answers = self._collect(task, lambda a: None, self.plan.min_silos_per_round).answers
        per_silo = {s: {**a.metrics, "num_examples": a.num_examples}
                    for s, a in answers.items() if isinstance(a, EvaluateResult)}
        aggregate = evaluation_aggregate(per_silo)
        self._progress("evaluation on held-out data: " + json.dumps({"aggregate": aggregate}, default=float))
        evaluation: dict[str, Any] = {"per_silo": per_silo, "aggregate": aggregate}
        if self.plan.personalization is not None:
            evaluation["personalization"] = personalization_summary(self.plan.personalization.canonical(), per_silo)
        return evaluation

    def _export(self, state: list[NDArray[Any]], export_dir: Path) -> Path:
        model = build_keras_model(self.plan)
        model.set_weights(self.computations.model_weights(state))
        export_dir.mkdir(parents=True, exist_ok=True)
        path = export_dir / SAVED_MODEL_DIR
        model.save(path, save_format="tf")
        # The card says which input column is which and how each hospital preprocesses: without
        # it nobody can apply the SavedModel without guessing (`aggregator predict` reads it).
        card = build_card(self.plan, rounds_completed=self.report.rounds_completed,
                          evaluation=self.report.evaluation, dp_declarations=self.report.dp_declarations)
        write_card(export_dir, card)
        self._record("model.exported", plan_hash=self.plan.plan_hash, path=str(path))
        return path
