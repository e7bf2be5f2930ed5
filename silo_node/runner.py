"""The silo's work loop: poll the aggregator, check each task against local rules, run the
locally built computation on the minimised view, record what leaves, and answer.

Checks, in order, before any data is touched: the plan hashes to what was announced; the
data steward (or local policy) approved it; the model and features can be built and are
within the dataset's allow-list; the computation built here has the announced fingerprint.
Refusals carry a stable code and a message written here, never exception text.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from healthfed_common import __version__
from healthfed_common.client_data import training_dataset_factory
from healthfed_common.errors import HealthFedError, PlanInvalid, UnknownModel
from healthfed_common.learning_process import FederatedComputations, build_federated_computations, build_keras_model
from healthfed_common.plan import Plan, parse_plan
from healthfed_common.wire import codec
from silo_node.released_results import input_digest
from silo_node.services import SiloServices
from healthfed_common.wire.messages import (
    Ack,
    AuditCheckpoint,
    EvaluateResult,
    EvaluateTask,
    PlanFinished,
    PollRequest,
    Refusal,
    SecAggPhaseTask,
    SecAggReply,
    SharesBundle,
    TrainResult,
    TrainTask,
    Wait,
)

log = logging.getLogger("healthfed.silo")


class TaskRefused(Exception):
    """Internal: a task this silo will not run, with the code and safe message to send."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SiloRunner:
    def __init__(self, services: SiloServices, connection: Any, poll_interval_s: float = 2.0, metrics: Any = None) -> None:
        self._metrics = metrics
        self._services = services
        self._connection = connection
        self._poll_interval = poll_interval_s
        self.tasks_done = 0
        # session id -> (protocol client, this silo's integer vectors); in memory only: a
        # silo that restarts mid-protocol is a dropout, which the protocol tolerates.
        self._sessions: dict[bytes, tuple[Any, list[np.ndarray]]] = {}

    def _audit(self, event_kind: str, outcome: str = "success", **detail: Any) -> None:
        if self._services.audit is not None:
            self._services.audit.record(event_kind, actor=self._services.silo_id, outcome=outcome, detail=detail)

    def serve(self, stop: threading.Event, exit_when_finished: bool = False) -> None:
        silo_id = self._services.silo_id
        log.info("silo %s polling the aggregator", silo_id)
        while not stop.is_set():
            response = self._connection.poll(PollRequest(silo_id, __version__))
            if self._metrics is not None:
                self._metrics.contact()
            if isinstance(response, TrainTask):
                # operators (and tests) see when a round's task was taken, before any work on it
                log.info("round %d attempt %d: took the train task", response.round, response.attempt)
                self._answer(response, self._train)
            elif isinstance(response, EvaluateTask):
                self._answer(response, self._evaluate)
            elif isinstance(response, SecAggPhaseTask):
                self._answer(response, self._secagg_phase)
            elif isinstance(response, PlanFinished):
                log.info("plan %s finished after %d rounds", response.plan_hash[:12], response.rounds_completed)
                if exit_when_finished:
                    return
                stop.wait(self._poll_interval)
            elif isinstance(response, Wait):
                stop.wait(min(max(response.retry_after_s, 0.1), 30.0))

    def _answer(self, task: TrainTask | EvaluateTask, handler: Any) -> None:
        silo_id = self._services.silo_id
        round_number = getattr(task, "round", 0)
        try:
            answer = handler(task)
        except Exception as error:  # a silo answers every task; it never dies on one
            refusal = error if isinstance(error, TaskRefused) else TaskRefused(
                "SILO_INTERNAL_ERROR", f"the silo failed while running the task ({type(error).__name__}); see its log"
            )
            if not isinstance(error, TaskRefused):
                log.exception("task %s failed", task.task_id)
            log.warning("refusing %s: %s %s", task.task_id, refusal.code, refusal.message)
            self._audit("round.refused", outcome="minor_failure", plan_hash=task.plan_hash,
                        round=round_number, code=refusal.code)
            answer = Refusal(silo_id, task.task_id, task.plan_hash, round_number, refusal.code, refusal.message)
        payload = codec.encode(answer)
        if not isinstance(answer, Refusal):
            # recorded (size, sha256, recipient; audit event payload.released) before it leaves
            self._services.egress.record(task.plan_hash, round_number, type(answer).__name__, payload, "aggregator")
            if self._metrics is not None:
                self._metrics.task_run("evaluate" if isinstance(task, EvaluateTask) else "train")
                self._metrics.bytes_released(len(payload))
        elif self._metrics is not None:
            self._metrics.refusal(answer.code)
        ack = self._connection.submit(answer)
        if isinstance(ack, Ack) and not ack.accepted:
            log.warning("aggregator did not accept %s: %s %s", task.task_id, ack.code, ack.message)
        self.tasks_done += 1
        if isinstance(task, SecAggPhaseTask) and isinstance(ack, Ack) and ack.accepted:
            log.info("round %d: secure-aggregation phase %s answered", task.round, task.phase)
        self._send_checkpoint()

    def _send_checkpoint(self) -> None:
        """Hands the aggregator a signed checkpoint of this silo's audit log, with the
        consistency proof from the last one it accepted, so history cannot be rewritten."""
        audit, witnessed = self._services.audit, self._services.witnessed
        if audit is None or witnessed is None:
            return
        checkpoint = audit.sign_checkpoint()
        previous = witnessed.last_size()
        proof = tuple(audit.consistency_proof(previous, checkpoint.size)) if 0 < previous < checkpoint.size else ()
        message = AuditCheckpoint(self._services.silo_id, checkpoint.to_dict(), proof, previous)
        ack = self._connection.submit(message)
        if isinstance(ack, Ack) and ack.accepted:
            witnessed.set_last_size(checkpoint.size)
        else:
            log.warning("aggregator did not witness audit checkpoint %d: %s", checkpoint.size, getattr(ack, "message", ack))

    # -- checks shared by both task kinds ---------------------------------------------
    def _checked_plan(self, plan_json: bytes, plan_hash: str) -> Plan:
        try:
            plan = parse_plan(plan_json, source="received plan")
        except PlanInvalid:
            raise TaskRefused("PLAN_INVALID", "the plan does not satisfy this silo's plan schema") from None
        if plan.plan_hash != plan_hash:
            raise TaskRefused("PLAN_HASH_MISMATCH", "the plan does not hash to the announced plan_hash")
        try:
            dataset_policy = self._services.registry.policy(plan.dataset)
        except LookupError:
            raise TaskRefused("DATASET_NOT_FOUND", f"this silo has no dataset registered as {plan.dataset!r}") from None
        decision = self._services.approvals.consider(plan, dataset_policy)
        if not decision.approved:
            raise TaskRefused(decision.reason, decision.message)
        return plan

    def _view(self, plan: Plan, subset: str) -> Any:
        try:
            return self._services.registry.training_view(plan.dataset, plan, subset)
        except HealthFedError as error:
            raise TaskRefused(error.code, _safe_message(error)) from None
        except (LookupError, PermissionError, ValueError) as error:
            code = getattr(error, "code", type(error).__name__.upper())
            raise TaskRefused(str(code), _safe_message(error)) from None

    def _computations(self, plan: Plan) -> FederatedComputations:
        try:
            return build_federated_computations(plan)
        except UnknownModel:
            raise TaskRefused("UNKNOWN_MODEL", f"model id {plan.model.id!r} is not in this silo's registry") from None
        except Exception as error:  # any build failure is a refusal, recorded, never a crash
            log.exception("could not build the plan's computation")
            raise TaskRefused("PLAN_UNBUILDABLE", f"this silo cannot build the plan's model ({type(error).__name__})") from None

    # -- the two task kinds ----------------------------------------------------------
    def _train(self, task: TrainTask) -> TrainResult:
        plan = self._checked_plan(task.plan_json, task.plan_hash)
        self._audit("round.joined", plan_hash=task.plan_hash, round=task.round)
        view = self._view(plan, "train")
        computations = self._computations(plan)
        if computations.fingerprint != task.fingerprint:
            raise TaskRefused(
                "FINGERPRINT_MISMATCH",
                "the computation announced by the aggregator differs from the one this silo built from the plan",
            )
        input_sha256 = input_digest(task.client_input)
        previous = self._services.released.get(task.plan_hash, task.round)
        if previous is not None:
            stored_digest, stored = previous
            if stored_digest == input_sha256 or plan.dp is not None:
                if stored_digest != input_sha256:
                    raise TaskRefused(
                        "ROUND_ALREADY_RELEASED",
                        f"round {task.round} of this plan was already released from a different model state; "
                        "training it again would spend privacy twice",
                    )
                log.info("round %d: re-sending the update released before (no retraining)", task.round)
                return self._secure_or_plain(plan, computations, task, replace(stored, task_id=task.task_id))
        dataset_factory = self._dataset_factory(plan, view, task.round)
        began = time.time()
        outputs = computations.work(list(task.client_input), [dataset_factory])
        metrics_count, secure_count = computations.work_parts[:2]
        log.info("round %d: trained on %d records in %.1fs", task.round, len(view.labels), time.time() - began)
        result = TrainResult(
            silo_id=self._services.silo_id, task_id=task.task_id, plan_hash=task.plan_hash, round=task.round,
            metrics_part=tuple(outputs[:metrics_count]),
            secure_parts=tuple(outputs[metrics_count : metrics_count + secure_count]),
            declarations=self._privacy_declaration(plan),
        )
        self._services.released.put(result, input_sha256)
        return self._secure_or_plain(plan, computations, task, result)

    def _secure_or_plain(self, plan: Plan, computations: FederatedComputations, task: TrainTask,
                         result: TrainResult) -> TrainResult:
        """Under secure aggregation the integer parts stay here until masked: the result
        carries only the allow-listed metrics and this silo's key advertisement."""
        if task.secagg is None:
            if plan.secure_aggregation.protocol != "none":
                raise TaskRefused("SECURE_AGGREGATION_REQUIRED", "the plan requires secure aggregation but the round offers none")
            return result
        from healthfed_common.secagg import SecAggClient
        from healthfed_common.secure_round import session_params, to_vectors

        offered = task.secagg
        expected = session_params(plan, computations, offered.participants, task.round, task.attempt)
        announced = (offered.session_id, tuple(offered.participants), offered.threshold, tuple(offered.bitwidths),
                     tuple(offered.vector_lengths), offered.neighbours or None)
        derived = (expected.session_id, expected.participants, expected.threshold, expected.bitwidths,
                   expected.vector_lengths, expected.neighbours)
        if announced != derived or self._services.silo_id not in expected.participants:
            raise TaskRefused("SECAGG_SESSION_MISMATCH",
                              "the secure-aggregation session offered differs from the one derived from the plan")
        client = SecAggClient(self._services.silo_id, expected)
        self._sessions = {expected.session_id: (client, to_vectors(result.secure_parts))}
        return replace(result, secure_parts=(), secagg=client.advertise_keys())

    def _secagg_phase(self, task: SecAggPhaseTask) -> SecAggReply:
        from healthfed_common.secagg import SecAggError

        session = self._sessions.get(getattr(task.payload, "session_id", b""))
        if session is None:
            raise TaskRefused("SECAGG_UNKNOWN_SESSION", "this silo holds no state for that secure-aggregation session")
        client, vectors = session
        try:
            if task.phase == "share_keys":
                payload: Any = SharesBundle(client.share_keys(task.payload))
            elif task.phase == "masked_input":
                payload = client.masked_input(task.payload, vectors)
                log.info("round %d: masked input ready for the aggregator", task.round)
            elif task.phase == "unmask":
                payload = client.unmask(task.payload)
            else:
                raise TaskRefused("SECAGG_UNKNOWN_PHASE", f"unknown phase {task.phase!r}")
        except SecAggError as error:
            raise TaskRefused(error.code, str(error)[:300]) from None
        return SecAggReply(self._services.silo_id, task.task_id, task.plan_hash, task.round, payload)

    def _dataset_factory(self, plan: Plan, view: Any, round_number: int) -> Any:
        """Non-private plans: the plan-seeded shuffled batches. DP plans: the silo calibrates
        its own noise for its dataset size, charges the ledger durably BEFORE training (so
        no update can leave uncharged), and Poisson-samples with OS entropy."""
        if plan.dp is None:
            return training_dataset_factory(view.features, view.labels, plan, round_number)
        from healthfed_common.dp.accounting import SamplingSchedule, silo_dp_parameters
        from healthfed_common.dp.sampling import poisson_dataset_factory

        ledger = self._services.ledger
        if ledger is None:
            raise TaskRefused("PRIVACY_LEDGER_UNAVAILABLE", "this silo has no privacy ledger")
        try:
            params = _dp_parameters(plan, view.n)
            ledger.charge(plan.dataset, plan.plan_hash, round_number, params.round_event, plan.dp.accountant)
        except Exception as error:
            code = getattr(error, "code", None)
            if code is None:
                raise
            raise TaskRefused(str(code), _safe_message(error)) from None
        schedule = SamplingSchedule(view.n, plan.batch_size, plan.local_epochs)
        return poisson_dataset_factory(
            view.features, view.labels, schedule=schedule, noise_multiplier=params.noise_multiplier
        )

    def _privacy_declaration(self, plan: Plan) -> dict[str, float]:
        """What this silo declares it has spent on the plan's dataset (aggregate numbers)."""
        ledger = self._services.ledger
        if plan.dp is None or ledger is None:
            return {}
        spent, delta = ledger.spent(plan.dataset)
        remaining, _ = ledger.remaining(plan.dataset)
        return {"epsilon_spent": float(spent), "delta": float(delta), "epsilon_remaining": float(remaining)}

    def _evaluate(self, task: EvaluateTask) -> EvaluateResult:
        plan = self._checked_plan(task.plan_json, task.plan_hash)
        view = self._view(plan, "test")
        metrics = evaluate_weights(plan, list(task.model_weights), view.features, view.labels)
        return EvaluateResult(self._services.silo_id, task.task_id, task.plan_hash, int(len(view.labels)), metrics)


@functools.lru_cache(maxsize=32)
def _dp_parameters(plan: Plan, dataset_size: int) -> Any:
    from healthfed_common.dp.accounting import silo_dp_parameters

    return silo_dp_parameters(plan, dataset_size)


def evaluate_weights(plan: Plan, weights: list[np.ndarray], features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Loss, accuracy and AUC of the given model weights on local data, released as
    allow-listed aggregate metrics only."""
    import tensorflow as tf

    model = build_keras_model(plan)
    try:
        model.set_weights(weights)
    except ValueError:
        raise TaskRefused("WEIGHTS_MISMATCH", "the model weights do not fit the plan's model") from None
    model.compile(
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy"), tf.keras.metrics.AUC(name="auc")],
    )
    if len(labels) == 0:
        raise TaskRefused("NO_EVALUATION_DATA", "this silo has no held-out records for evaluation")
    values = model.evaluate(features, labels, batch_size=256, verbose=0, return_dict=True)
    return {name: float(value) for name, value in values.items()}


def _safe_message(error: BaseException) -> str:
    """Data-layer errors name features and policies, never record values (their messages are
    written by HealthFed, not copied from data); anything else gets a generic message."""
    if isinstance(error, HealthFedError) or getattr(error, "code", None):
        return str(error)[:500]
    return f"the dataset cannot serve this plan ({type(error).__name__})"
