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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from healthfed_common import __version__
from healthfed_common.client_data import training_dataset_factory
from healthfed_common.errors import HealthFedError, PlanInvalid, UnknownModel
from healthfed_common.learning_process import FederatedComputations, build_federated_computations, build_keras_model
from healthfed_common.plan import Plan, parse_plan
from healthfed_common.wire import codec
from silo_node.errors import SiloNodeError
from silo_node.released_results import input_digest
from silo_node.services import SiloServices
from healthfed_common.wire.messages import (
    Ack,
    AggregatorCheckpoint,
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


class TaskRefused(SiloNodeError):
    """Internal: a task this silo will not run, with the code and safe message to send."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Session:
    """One secure-aggregation session this silo is in: the protocol client, the silo's own
    integer vectors, and each phase's answer with the digest of the request it answered, so a
    retried phase gets the identical reply and a different request for it is equivocation."""

    plan_hash: str
    round: int
    client: Any
    vectors: list[NDArray[Any]]
    advertisement: Any
    replies: dict[str, tuple[str, SecAggReply]] = field(default_factory=dict)


class SiloRunner:
    def __init__(self, services: SiloServices, connection: Any, poll_interval_s: float = 2.0, metrics: Any = None) -> None:
        self._metrics = metrics
        self._services = services
        self._connection = connection
        self._poll_interval = poll_interval_s
        self.tasks_done = 0
        self._plans_seen_finished: set[str] = set()
        # session id -> the session's client and replies; in memory only (secrets never touch
        # disk): a silo that restarts mid-protocol is a dropout, which the protocol tolerates,
        # and the durable MaskedUpdates record keeps it from masking that update again.
        self._sessions: dict[bytes, _Session] = {}

    def _audit(self, event_kind: str, outcome: str = "success", **detail: Any) -> None:
        if self._services.audit is not None:
            # The aggregator chooses round numbers: an out-of-range one is recorded as offered
            # (text), never allowed to break the audit schema or the work loop.
            offered = detail.get("round")
            if isinstance(offered, int) and offered < 0:
                detail = {**detail, "round": 0, "offered_round": str(offered)}
            self._services.audit.record(event_kind, actor=f"silo:{self._services.silo_id}", outcome=outcome, detail=detail)

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
                if response.plan_hash not in self._plans_seen_finished:
                    log.info("plan %s finished after %d rounds", response.plan_hash[:12], response.rounds_completed)
                    self._plans_seen_finished.add(response.plan_hash)
                    # one more exchange: the aggregator's last entries (evaluation, model export)
                    # come after the last task, and would otherwise be witnessed by no hospital
                    self._exchange_checkpoints()
                if exit_when_finished:
                    return
                stop.wait(self._poll_interval)
            elif isinstance(response, Wait):
                stop.wait(min(max(response.retry_after_s, 0.1), 30.0))

    def _answer(self, task: TrainTask | EvaluateTask | SecAggPhaseTask, handler: Any) -> None:
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
        self._exchange_checkpoints()

    def _exchange_checkpoints(self) -> None:
        try:
            self._send_checkpoint()
        except Exception:  # the exchange is evidence-keeping: it must never stop the silo's work
            log.exception("the audit-checkpoint exchange with the aggregator failed; the next one tries again")

    def _send_checkpoint(self) -> None:
        """Hands the aggregator a signed checkpoint of this silo's audit log, with the
        consistency proof from the last one it accepted, so history cannot be rewritten; and
        witnesses the aggregator's log in return (silo_node.aggregator_witness)."""
        audit, witnessed = self._services.audit, self._services.witnessed
        if audit is None or witnessed is None:
            return
        aggregator_log = self._services.aggregator_log
        checkpoint = audit.sign_checkpoint()
        previous = witnessed.last_size()
        proof = tuple(audit.consistency_proof(previous, checkpoint.size)) if 0 < previous < checkpoint.size else ()
        their_size = aggregator_log.witnessed_size() if aggregator_log is not None else 0
        message = AuditCheckpoint(self._services.silo_id, checkpoint.to_dict(), proof, previous, their_size)
        reply = self._connection.submit(message)
        if isinstance(reply, AggregatorCheckpoint):
            witnessed.set_last_size(checkpoint.size)
            if aggregator_log is not None:
                aggregator_log.accept(reply, checkpoint)  # a refusal is logged and recorded in this silo's audit log
        elif isinstance(reply, Ack) and reply.accepted:
            witnessed.set_last_size(checkpoint.size)
            if aggregator_log is not None:  # protocol 2 answers with its own: withholding it is recorded
                aggregator_log.withheld(checkpoint)
        else:
            log.warning("aggregator did not witness audit checkpoint %d: %s", checkpoint.size,
                        getattr(reply, "message", reply))

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
        except HealthFedError as error:  # data-layer errors: code and message written by HealthFed
            raise TaskRefused(error.code, _safe_message(error)) from None
        except (LookupError, PermissionError, ValueError):
            # a library's error: its text could quote records, so it stays in this silo's log
            log.exception("could not build the %s view of dataset %r", subset, plan.dataset)
            raise TaskRefused("SILO_INTERNAL_ERROR",
                              "the silo could not build the plan's view of its dataset; see its log") from None

    def _computations(self, plan: Plan) -> FederatedComputations:
        try:
            return build_federated_computations(plan, self._services.plan_cache_dir)
        except UnknownModel:
            raise TaskRefused("UNKNOWN_MODEL", f"model id {plan.model.id!r} is not in this silo's registry") from None
        except Exception as error:  # any build failure is a refusal, recorded, never a crash
            log.exception("could not build the plan's computation")
            raise TaskRefused("PLAN_UNBUILDABLE", f"this silo cannot build the plan's model ({type(error).__name__})") from None

    # -- the two task kinds ----------------------------------------------------------
    def _train(self, task: TrainTask) -> TrainResult:
        plan = self._checked_plan(task.plan_json, task.plan_hash)
        _check_round_range(plan, task.round, task.attempt)
        if plan.secure_aggregation.protocol != "none":
            self._check_cohort(plan)
        self._audit("round.joined", plan_hash=task.plan_hash, round=task.round, attempt=task.attempt)
        view = self._view(plan, "train")
        computations = self._computations(plan)
        if computations.fingerprint != task.fingerprint:
            raise TaskRefused(
                "FINGERPRINT_MISMATCH",
                "the computation announced by the aggregator differs from the one this silo built from the plan",
            )
        _check_client_input(computations, task.client_input)
        session = self._derived_session(plan, computations, task)
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
                return self._secure_or_plain(plan, session, task, replace(stored, task_id=task.task_id))
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
        return self._secure_or_plain(plan, session, task, result)

    # -- secure aggregation -------------------------------------------------------------
    def _check_cohort(self, plan: Plan) -> None:
        """Under secure aggregation this silo takes part only as a member of the plan's fixed
        cohort, pinned to its own signing key (the threshold against the node's policy is checked
        by the approval step before this: SECAGG_THRESHOLD_TOO_LOW)."""
        from healthfed_common.silo_keys import encode_public_key, fingerprint

        silo_id, key = self._services.silo_id, getattr(self._services, "signing_key", None)
        if key is None:
            raise TaskRefused("SIGNING_KEY_MISSING", "this silo has no signing key (run `silo-node enrol`); "
                              "it cannot take part in secure aggregation")
        members = {m.silo_id: m for m in plan.cohort}
        if silo_id not in members:
            raise TaskRefused("NOT_IN_COHORT", f"the plan's cohort does not include {silo_id}")
        own = encode_public_key(key)
        if members[silo_id].signing_key != own:
            raise TaskRefused("COHORT_KEY_MISMATCH",
                              f"the plan pins {members[silo_id].fingerprint} for {silo_id}, but this silo's key is "
                              f"{fingerprint(own)}")

    def _derived_session(self, plan: Plan, computations: FederatedComputations, task: TrainTask) -> Any:
        """The session this silo derives for the task (None for a plan without secure
        aggregation); refuses an offer that differs from it, and a round whose update this
        silo already masked in another session -- before any data is read or budget spent."""
        if plan.secure_aggregation.protocol == "none":
            return None
        if task.secagg is None:
            raise TaskRefused("SECURE_AGGREGATION_REQUIRED", "the plan requires secure aggregation but the round offers none")
        from healthfed_common.secure_round import session_params, state_digest

        offered = task.secagg
        expected = session_params(plan, computations, task.round, task.attempt, state_digest(task.client_input))
        announced = (offered.session_id, tuple(offered.participants), offered.threshold, tuple(offered.bitwidths),
                     tuple(offered.vector_lengths), offered.neighbours or None)
        derived = (expected.session_id, expected.participants, expected.threshold, expected.bitwidths,
                   expected.vector_lengths, expected.neighbours)
        if announced != derived:
            raise TaskRefused("SECAGG_SESSION_MISMATCH",
                              "the secure-aggregation session offered differs from the one this silo derives from "
                              "the plan, its cohort, the round and the model it received")
        record = self._services.released.masked.session(plan.plan_hash, task.round)
        if record is not None and record[1] and record[0] != expected.session_id:
            raise TaskRefused("SECAGG_UPDATE_ALREADY_MASKED",
                              f"this silo's update for round {task.round} was already masked in another "
                              "secure-aggregation session; masking it again would let two sums reveal it")
        return expected

    def _secure_or_plain(self, plan: Plan, params: Any, task: TrainTask, result: TrainResult) -> TrainResult:
        """Under secure aggregation the integer parts stay here until masked: the result
        carries only the allow-listed metrics and this silo's signed key advertisement."""
        if params is None:
            return result
        from healthfed_common.secagg import SecAggClient
        from healthfed_common.secure_round import to_vectors

        existing = self._sessions.get(params.session_id)
        if existing is not None:  # the same session offered again (e.g. the aggregator restarted)
            return replace(result, secure_parts=(), secagg=existing.advertisement)
        masked = self._services.released.masked
        if (record := masked.session(plan.plan_hash, task.round)) is not None and record[1]:
            raise TaskRefused("SECAGG_UPDATE_ALREADY_MASKED",
                              f"this silo's update for round {task.round} was masked in a session it no longer holds "
                              "(the silo restarted); it is not masked again")
        key = self._services.signing_key
        cohort = {m.silo_id: m.signing_key for m in plan.cohort}
        client = SecAggClient(self._services.silo_id, params, sign=key.sign, verify=_cohort_verifier(cohort))
        masked.enter(plan.plan_hash, task.round, params.session_id)
        advertisement = client.advertise_keys()
        self._sessions = {
            sid: s for sid, s in self._sessions.items() if (s.plan_hash, s.round) != (plan.plan_hash, task.round)
        }
        self._sessions[params.session_id] = _Session(
            plan.plan_hash, task.round, client, to_vectors(result.secure_parts), advertisement
        )
        return replace(result, secure_parts=(), secagg=advertisement)

    def _secagg_phase(self, task: SecAggPhaseTask) -> SecAggReply:
        from healthfed_common.secagg import (
            ConsistencySignature, KeyRoster, SecAggError, ShareInbox, UnmaskRequest,
        )

        phases: dict[str, type[KeyRoster] | type[ShareInbox] | type[UnmaskRequest]] = {
            "share_keys": KeyRoster, "masked_input": ShareInbox, "consistency": UnmaskRequest, "unmask": UnmaskRequest}
        expected_payload = phases.get(task.phase)
        if expected_payload is None:
            raise TaskRefused("SECAGG_UNKNOWN_PHASE", "the aggregator named an unknown secure-aggregation phase")
        request: Any = task.payload
        if not isinstance(request, expected_payload):
            raise TaskRefused("SECAGG_PHASE_PAYLOAD_INVALID",
                              f"phase {task.phase} expects a {expected_payload.__name__}")
        session = self._sessions.get(request.session_id)
        if session is None or (session.plan_hash, session.round) != (task.plan_hash, task.round):
            raise TaskRefused("SECAGG_UNKNOWN_SESSION", "this silo holds no state for that secure-aggregation session")
        digest = input_digest((codec.encode(task.payload),))
        if task.phase in session.replies:
            answered_digest, reply = session.replies[task.phase]
            if answered_digest != digest:
                raise TaskRefused("SECAGG_EQUIVOCATION",
                                  f"the aggregator sent a second, different {task.phase} request in one session")
            return replace(reply, task_id=task.task_id)
        client = session.client
        try:
            if task.phase == "share_keys":
                payload: Any = SharesBundle(client.share_keys(task.payload))
            elif task.phase == "masked_input":
                payload = client.masked_input(task.payload, session.vectors)
                # durable BEFORE the masked update leaves: this update never enters another session
                self._services.released.masked.mark_masked(task.plan_hash, task.round, request.session_id)
                self._audit("secagg.masked", plan_hash=task.plan_hash, round=task.round,
                            session=request.session_id.hex()[:16])
                log.info("round %d: masked input ready for the aggregator", task.round)
            elif task.phase == "consistency":
                payload = client.sign_consistency(task.payload)
                assert isinstance(payload, ConsistencySignature)
            else:
                payload = client.unmask(task.payload)
        except SecAggError as error:
            raise TaskRefused(error.code, _protocol_message(error)) from None
        reply = SecAggReply(self._services.silo_id, task.task_id, task.plan_hash, task.round, payload)
        session.replies[task.phase] = (digest, reply)
        return reply

    def _dataset_factory(self, plan: Plan, view: Any, round_number: int) -> Any:
        """The round's client data, after the ledger has been settled for it.

        First, a view larger than the plan's `max_examples_per_silo` is refused
        (TOO_MANY_EXAMPLES) before any charge: the steward approved "at most N records".
        Non-private plans: on a dataset with a privacy budget they are refused
        (NON_PRIVATE_PLAN_ON_BUDGETED_DATASET) unless the approval policy says
        `charge_infinity`; then the ledger records epsilon = infinity for (plan, round)
        BEFORE training, so the budget shows the dataset fully spent and no later DP plan
        can claim a finite epsilon for it. Then the plan-seeded shuffled batches. DP plans:
        the silo calibrates its own noise for its dataset size, charges the ledger durably
        BEFORE training (so no update can leave uncharged), and Poisson-samples with OS
        entropy (noise seeds included)."""
        n_records = len(view.labels)
        if n_records > plan.max_examples_per_silo:
            raise TaskRefused(
                "TOO_MANY_EXAMPLES",
                f"the training view of {plan.dataset!r} has {n_records} records, more than the plan's "
                f"max_examples_per_silo ({plan.max_examples_per_silo})",
            )
        ledger = self._services.ledger
        if plan.dp is None:
            if ledger.has_budget(plan.dataset):
                rule = getattr(self._services.approvals, "policy", None)
                if getattr(rule, "non_private_plans_on_budgeted_datasets", "refuse") != "charge_infinity":
                    raise TaskRefused(
                        "NON_PRIVATE_PLAN_ON_BUDGETED_DATASET",
                        f"dataset {plan.dataset!r} has a privacy budget and this plan has no differential "
                        "privacy; this silo's policy refuses it (non_private_plans_on_budgeted_datasets: refuse)",
                    )
                try:
                    ledger.charge_non_private(plan.dataset, plan.plan_hash, round_number)
                except HealthFedError as error:  # the ledger's own coded errors; anything else is internal
                    raise TaskRefused(error.code, _safe_message(error)) from None
            return training_dataset_factory(view.features, view.labels, plan, round_number)
        from healthfed_common.dp.accounting import SamplingSchedule
        from healthfed_common.dp.sampling import poisson_dataset_factory

        try:
            params = _dp_parameters(plan, view.n)
            ledger.charge(plan.dataset, plan.plan_hash, round_number, params.round_event, plan.dp.accountant)
        except HealthFedError as error:  # ledger and DP calibration errors; anything else is internal
            raise TaskRefused(error.code, _safe_message(error)) from None
        schedule = SamplingSchedule(view.n, plan.batch_size, plan.local_epochs)
        return poisson_dataset_factory(
            view.features, view.labels, schedule=schedule, noise_multiplier=params.noise_multiplier
        )

    def _privacy_declaration(self, plan: Plan) -> dict[str, float]:
        """What this silo declares it has spent on the plan's dataset (aggregate numbers).
        A dataset charged for a non-private plan declares `epsilon_spent_infinite: 1` and no
        finite epsilon (the wire and the aggregator's stores carry finite floats only)."""
        import math

        ledger = self._services.ledger
        if not ledger.has_budget(plan.dataset):
            return {}
        spent, delta = ledger.spent(plan.dataset)
        if plan.dp is None and not any(c.non_private for c in ledger.charges(plan.dataset, plan.plan_hash)):
            return {}
        remaining, _ = ledger.remaining(plan.dataset)
        if math.isinf(spent):
            return {"epsilon_spent_infinite": 1.0, "delta": float(delta), "epsilon_remaining": 0.0}
        return {"epsilon_spent": float(spent), "delta": float(delta), "epsilon_remaining": float(remaining)}

    def _evaluate(self, task: EvaluateTask) -> EvaluateResult:
        """Evaluates the offered weights on the held-out records, under control.

        The silo evaluates only for a plan it approved (checked like a train task) and took
        part in (it released a result for at least one of the plan's rounds), and at most
        `ApprovalPolicy.max_evaluations_per_plan` distinct models per plan (default 1): each
        evaluation is recorded in the privacy ledger as a non-DP disclosure (model digest,
        the released count and metrics) durably BEFORE it is released, refused beyond the
        limit with EVALUATION_LIMIT_REACHED; a retry with the same weights re-sends the
        recorded metrics (no new disclosure). Every release is also in the egress record.

        What this bounds: how many models per plan the aggregator can have scored on the
        held-out records, and that every such release is counted and shown (`ledger show`).
        What it does NOT bound: what one evaluation reveals. The metrics are exact (not DP)
        and the silo cannot check that the weights are the plan's final state (under secure
        aggregation it never sees it), so the one allowed evaluation may be of any model the
        aggregator chooses, e.g. one crafted to test a held-out record.

        With `plan.personalization` (non-DP plans only) the release also carries the metrics of
        the offered model fine-tuned on this silo's training records (`personalized_<metric>`),
        in the same ledger disclosure; the fine-tuned weights never leave (silo_node.personalization)."""
        plan = self._checked_plan(task.plan_json, task.plan_hash)
        released = self._services.released
        if released is not None and not any(
            released.get(task.plan_hash, r) is not None for r in range(plan.rounds, -1, -1)
        ):
            raise TaskRefused(
                "EVALUATION_NOT_PARTICIPANT",
                "this silo evaluates only plans it trained in; it released no round of this plan",
            )
        ledger = self._services.ledger
        rule = getattr(self._services.approvals, "policy", None)
        limit = int(getattr(rule, "max_evaluations_per_plan", 1))
        view = self._view(plan, "test")
        # personalisation (non-DP plans only, see silo_node.personalization): the global model
        # fine-tuned on this silo's training records, scored on the same held-out records; only
        # its metrics join the release, the fine-tuned weights stay in this function
        train_view = self._view(plan, "train") if plan.personalization is not None else None

        def compute() -> dict[str, Any]:
            weights = list(task.model_weights)
            metrics = evaluate_weights(plan, weights, view.features, view.labels)
            if train_view is not None:
                from silo_node.personalization import personalized_metrics

                metrics |= personalized_metrics(plan, weights, (train_view.features, train_view.labels),
                                                (view.features, view.labels), evaluate_weights)
            return {"num_examples": int(len(view.labels)), "metrics": metrics}

        try:
            disclosure = ledger.record_evaluation(
                plan.dataset, task.plan_hash, input_digest(task.model_weights), limit, compute
            )
        except TaskRefused:
            raise
        except HealthFedError as error:  # ledger and DP calibration errors; anything else is internal
            raise TaskRefused(error.code, _safe_message(error)) from None
        return EvaluateResult(
            self._services.silo_id, task.task_id, task.plan_hash, int(disclosure.released["num_examples"]),
            {name: float(value) for name, value in disclosure.released["metrics"].items()},
        )


def _check_round_range(plan: Plan, round_number: int, attempt: int) -> None:
    """The steward approved `plan.rounds` rounds of at most `plan.max_round_attempts` attempts:
    anything outside is refused before data, budget or keys are touched."""
    if not 1 <= round_number <= plan.rounds:
        raise TaskRefused("ROUND_OUT_OF_RANGE", f"round {round_number} is outside the plan's rounds 1..{plan.rounds}")
    if not 1 <= attempt <= plan.max_round_attempts:
        raise TaskRefused("ATTEMPT_OUT_OF_RANGE",
                          f"attempt {attempt} is outside the plan's attempts 1..{plan.max_round_attempts}")


def _check_client_input(computations: FederatedComputations, client_input: tuple[Any, ...]) -> None:
    """The model state the aggregator sent must have exactly the shapes and dtypes of the
    computation this silo built, checked before any budget is charged (a malformed state
    would otherwise be charged and then fail inside the graph)."""
    from healthfed_common.tff_types import flatten_tensor_types

    leaves = flatten_tensor_types(computations.prepare.type_signature.result)
    if len(client_input) != len(leaves):
        raise TaskRefused("MODEL_INPUT_INVALID",
                          f"the model state has {len(client_input)} tensors, the plan's computation takes {len(leaves)}")
    for index, (value, leaf) in enumerate(zip(client_input, leaves)):
        if not isinstance(value, np.ndarray) or leaf.dtype is None or value.dtype != leaf.dtype \
                or value.ndim != len(leaf.shape) \
                or any(want is not None and want != got for want, got in zip(leaf.shape, value.shape)):
            raise TaskRefused("MODEL_INPUT_INVALID",
                              f"model state tensor {index} does not have the dtype and shape of the plan's computation")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise TaskRefused("MODEL_INPUT_INVALID", f"model state tensor {index} holds NaN or infinite values")


def _cohort_verifier(cohort: dict[str, str]) -> Any:
    """verify(silo, payload, signature) under the signing key the plan's cohort pins for it."""
    from healthfed_common.silo_keys import decode_public_key, verify_signature

    public = {silo: decode_public_key(key) for silo, key in cohort.items()}

    def verify(silo: str, payload: bytes, signature: bytes) -> bool:
        return silo in public and verify_signature(public[silo], payload, signature)

    return verify


def _protocol_message(error: BaseException) -> str:
    """Protocol errors name silos, phases and counts (public metadata), never key or vector
    bytes; cut to a bounded length."""
    return str(error)[:300]


@functools.lru_cache(maxsize=32)
def _dp_parameters(plan: Plan, dataset_size: int) -> Any:
    from healthfed_common.dp.accounting import silo_dp_parameters

    return silo_dp_parameters(plan, dataset_size)


def evaluate_weights(plan: Plan, weights: list[NDArray[Any]], features: NDArray[Any], labels: NDArray[Any]) -> dict[str, float]:
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


def _safe_message(error: HealthFedError) -> str:
    """The message HealthFed wrote for one of its own errors: data-layer, ledger, DP and plan
    errors name features, policies and budgets, never record values. Only HealthFed errors
    get here; a library's exception text never leaves the silo (the callers turn those into
    SILO_INTERNAL_ERROR with a fixed message and log them locally)."""
    return str(error)[:500]
