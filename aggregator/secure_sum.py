"""Drives a round's secure-aggregation protocol over the task board, after the silos'
training answers arrived with their key advertisements: roster → encrypted shares →
masked inputs → unmasking. The aggregator only relays ciphertexts and learns the sum."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from aggregator.task_board import TaskBoard
from healthfed_common.secagg import SecAggError, SecAggServer, SessionParams
from healthfed_common.wire.messages import SecAggPhaseTask, SecAggReply, SharesBundle, TrainResult

log = logging.getLogger("healthfed.aggregator.secagg")


def run_secure_sum(
    board: TaskBoard,
    params: SessionParams,
    results: list[TrainResult],
    *,
    plan_hash: str,
    round_number: int,
    task_prefix: str,
    deadline_s: float,
    progress: Callable[[str], None],
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Returns the exact sums mod 2^B and the silos whose inputs they contain; raises
    SecAggError (TooFewSurvivors when fewer than the threshold remain)."""
    server = SecAggServer(params)
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

    for sender, bundle in phase("share_keys", {s: roster for s in roster.silos}, SharesBundle).items():
        try:
            server.receive_shares(sender, bundle.shares)
        except SecAggError as error:
            log.warning("shares of %s rejected: %s", sender, error)
    inboxes: dict[str, Any] = {}
    for silo in roster.silos:
        try:
            inboxes[silo] = server.inbox_for(silo)
        except SecAggError:
            continue
    from healthfed_common.secagg import MaskedInput, UnmaskResponse

    for sender, masked in phase("masked_input", inboxes, MaskedInput).items():
        try:
            server.receive_masked_input(masked)
        except SecAggError as error:
            log.warning("masked input of %s rejected: %s", sender, error)
    request = server.unmask_request()
    for sender, response in phase("unmask", {s: request for s in request.survivors}, UnmaskResponse).items():
        try:
            server.receive_unmask_response(response)
        except SecAggError as error:
            log.warning("unmasking shares of %s rejected: %s", sender, error)
    sums = server.finish()
    return sums, tuple(server.counted)
