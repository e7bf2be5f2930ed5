"""Drives a round's secure-aggregation protocol over the task board, after the silos'
training answers arrived with their signed key advertisements: roster → encrypted shares →
masked inputs → consistency signatures → unmasking. The aggregator only relays ciphertexts
and signatures and learns the sum. It checks every advertisement and consistency signature
against the keys pinned in the plan's cohort too, so one silo's bad message drops that silo
instead of making every honest silo abort the round."""

from __future__ import annotations

import logging
from functools import partial
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import AggregatorError
from aggregator.task_board import TaskBoard
from healthfed_common.plan import Plan
from healthfed_common.secagg import (
    ConsistencySignature, MaskedInput, SecAggError, SecAggServer, SessionParams, UnmaskResponse,
)
from healthfed_common.silo_keys import decode_public_key, verify_signature
from healthfed_common.wire.messages import SecAggPhaseTask, SecAggReply, SharesBundle, TrainResult

log = logging.getLogger("healthfed.aggregator.secagg")


class SecureSumAborted(AggregatorError):
    """The session aborted (nothing was revealed). `masked`: the silos whose masked input had
    arrived -- they will not mask that update again, so the round cannot be re-offered."""

    def __init__(self, error: SecAggError, masked: tuple[str, ...]) -> None:
        super().__init__(str(error))
        self.error = error
        self.masked = masked


def cohort_verifier(plan: Plan) -> Callable[[str, bytes, bytes], bool]:
    """verify(silo, payload, signature) under the key the plan's cohort pins for `silo`."""
    public = {m.silo_id: decode_public_key(m.signing_key) for m in plan.cohort}

    def verify(silo: str, payload: bytes, signature: bytes) -> bool:
        return silo in public and verify_signature(public[silo], payload, signature)

    return verify


def run_secure_sum(
    board: TaskBoard,
    params: SessionParams,
    results: list[TrainResult],
    *,
    verify: Callable[[str, bytes, bytes], bool] | None = None,
    plan_hash: str,
    round_number: int,
    task_prefix: str,
    deadline_s: float,
    progress: Callable[[str], None],
) -> tuple[list[NDArray[Any]], tuple[str, ...]]:
    """Returns the exact sums mod 2^B and the silos whose inputs they contain; raises
    SecureSumAborted (its `error` is TooFewSurvivors when fewer than the threshold remain)."""
    server = SecAggServer(params, verify=verify)
    try:
        return _drive(board, server, results, plan_hash, round_number, task_prefix, deadline_s, progress)
    except SecAggError as error:
        raise SecureSumAborted(error, server.masked_from) from None


def _drive(
    board: TaskBoard,
    server: SecAggServer,
    results: list[TrainResult],
    plan_hash: str,
    round_number: int,
    task_prefix: str,
    deadline_s: float,
    progress: Callable[[str], None],
) -> tuple[list[NDArray[Any]], tuple[str, ...]]:
    for result in results:
        try:
            server.receive_advertisement(result.secagg)
        except SecAggError as error:
            log.warning("advertisement of %s rejected: %s", result.silo_id, error)
    roster = server.roster()

    def phase(name: str, payloads: dict[str, Any], expected: type) -> dict[str, Any]:
        task_id = f"{task_prefix}-{name}"
        tasks = {silo: SecAggPhaseTask(task_id, plan_hash, round_number, name, payload) for silo, payload in payloads.items()}

        def validate(answer: Any) -> str | None:
            if not isinstance(answer, SecAggReply) or not isinstance(answer.payload, expected):
                return f"phase {name} expects {expected.__name__}"
            return None

        board.open_each(tasks, validate)
        answers = board.wait_for_answers(time.time() + deadline_s)
        board.close()
        replies = {s: a.payload for s, a in answers.items() if isinstance(a, SecAggReply)}
        missing = sorted(set(payloads) - set(replies))
        if missing:
            progress(f"  secure aggregation, {name}: no answer from {missing} (treated as dropped)")
        return replies

    def deliver(replies: dict[str, Any], receive: Callable[[Any], None], what: str) -> None:
        """Hands each reply to the server; one silo's bad message drops that silo only."""
        for sender, reply in replies.items():
            try:
                receive(reply)
            except SecAggError as error:
                log.warning("%s of %s rejected: %s", what, sender, error)

    # shares are received under the silo that answered the task (the board's authenticated id)
    for sender, bundle in phase("share_keys", {s: roster for s in roster.silos}, SharesBundle).items():
        deliver({sender: bundle.shares}, partial(server.receive_shares, sender), "shares")
    inboxes: dict[str, Any] = {}
    for silo in roster.silos:
        try:
            inboxes[silo] = server.inbox_for(silo)
        except SecAggError:
            continue
    deliver(phase("masked_input", inboxes, MaskedInput), server.receive_masked_input, "masked input")
    split = server.unmask_request()
    deliver(phase("consistency", {s: split for s in split.survivors}, ConsistencySignature),
            server.receive_consistency_signature, "consistency signature")
    request = server.signed_unmask_request()
    deliver(phase("unmask", {s: request for s in request.survivors}, UnmaskResponse),
            server.receive_unmask_response, "unmasking shares")
    sums = server.finish()
    return sums, tuple(server.counted)
