"""The coordinator cannot cut back or rewrite the witnessed part of its own audit log unnoticed.

The aggregator's side is the production `aggregator.audit.AggregatorAudit.exchange` (its real
log, key and witness store), which the harness's scripted aggregator answers every checkpoint
with, as `aggregator run` does; the silo is the real runner of `harness.VictimSilo`. The
attacks are what a coordinator holding its own files and key can do: delete its newest entries
with their checkpoints (rollback), rewrite history after a rollback, start a new log under a
new key, hand over someone else's checkpoint, a malformed or oversized one, a stale one, one
whose acknowledgment names another checkpoint, or none at all. Each is refused by the silo and
recorded in the silo's own audit log, the silo keeps working, and the rollback is shown to
`compliance verify` by the checkpoints the silo kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aggregator.audit import AggregatorAudit
from compliance.cli.main import main as compliance_main
from compliance.node_dir import AGGREGATOR_ORIGIN, NodePaths
from compliance.witness import read_witnessed
from healthfed_common.wire.messages import Ack, AggregatorCheckpoint, AuditCheckpoint, PlanFinished, TrainTask
from tests.adversary.harness import VICTIM, VictimSilo
from tests.compliance.compliance_tamper import raw


def refused_task(silo: VictimSilo) -> TrainTask:
    """A task the silo refuses at once (its plan does not parse): the cheapest way to make
    it run one task and then exchange checkpoints with the aggregator."""
    return TrainTask(silo.task_id("witness"), b"{}", "0" * 64, 1, 1, "0" * 64, ())


def exchange(silo: VictimSilo) -> None:
    """One task and the checkpoint exchange that follows it (done when the silo polls again)."""
    silo.ask(refused_task(silo))
    silo.settle(polls=1)


Forgery = Callable[[AuditCheckpoint, AggregatorCheckpoint], Any]


def answer_with(audit: AggregatorAudit, forge: Forgery | None = None) -> Callable[[AuditCheckpoint], Any]:
    """The production exchange on `audit` (the silo's checkpoint is witnessed and acknowledged
    in the aggregator's log), with the answer then replaced by what `forge` makes of it."""

    def reply(message: AuditCheckpoint) -> Any:
        genuine = audit.exchange(message.silo_id, message)
        assert isinstance(genuine, AggregatorCheckpoint), genuine
        return genuine if forge is None else forge(message, genuine)

    return reply


def roll_back(state: Path, keep: int) -> None:
    """The coordinator hides its newest events: deletes them AND every checkpoint covering them."""
    with raw(NodePaths(state).audit_db) as db:  # its own file: it drops the append-only triggers
        db.execute("DELETE FROM entries WHERE idx >= ?", (keep,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))


def witnessed_sizes(silo: VictimSilo) -> list[int]:
    return [c.size for c in read_witnessed(NodePaths(silo.state).witness_db, AGGREGATOR_ORIGIN)]


def rejections(silo: VictimSilo) -> list[dict[str, Any]]:
    return silo.audit_events("checkpoint.rejected")


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = compliance_main(["verify", *argv, "--no-record"])
    return code, capsys.readouterr().out


@pytest.fixture
def witnessing_victim(tmp_path: Path) -> Iterator[tuple[VictimSilo, Path]]:
    """A silo that has witnessed the honest aggregator's log twice (the second time by a
    consistency proof from the first), the coordinator having logged events before and between;
    with the aggregator's state folder."""
    silo = VictimSilo.open(tmp_path)
    audit = silo.aggregator.audit
    assert audit is not None
    try:
        for index in range(6):
            audit.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"s{index}"})
        exchange(silo)
        audit.record("configuration.changed", actor="person:C. Lee", detail={"setting": "later"})
        exchange(silo)
        yield silo, tmp_path / f"{VICTIM}-aggregator-state"
    finally:
        silo.close()


def test_each_silo_keeps_the_aggregators_checkpoints_and_a_rollback_fails_verification(
    witnessing_victim: tuple[VictimSilo, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    silo, aggregator_state = witnessing_victim
    sizes = witnessed_sizes(silo)
    assert len(sizes) == 2 and 0 < sizes[0] < sizes[1], sizes  # the second extended the first by proof
    assert rejections(silo) == []
    # the silo told the aggregator what it had witnessed, so the proof could be made
    assert [m.aggregator_witnessed_size for m in silo.aggregator.checkpoints] == [0, sizes[0]]
    witness = str(NodePaths(silo.state).witness_db)
    code, out = verify(capsys, "--node", str(aggregator_state), "--witness", witness)
    assert code == 0 and "Rollback checked against 2 witnessed checkpoints" in out, out

    assert silo.aggregator.audit is not None
    silo.aggregator.audit.close()
    roll_back(aggregator_state, keep=4)
    code, out = verify(capsys, "--node", str(aggregator_state))
    assert code == 0 and "Rollback UNVERIFIABLE" in out, out  # nothing inside the file shows it...
    code, out = verify(capsys, "--node", str(aggregator_state), "--witness", witness)
    assert code == 1, out  # ...the silo's copy of the checkpoints does
    assert (f"covers {sizes[0]} entries but only 4 are present: entries 4..{sizes[0] - 1} were removed "
            "together with their checkpoints (rollback)") in out, out


ATTACKS = {
    "rolled_back": "the log shrank",
    "rewritten_after_rollback": "not consistent with the witnessed size",
    "new_key": "not the trusted key",
    "another_origin": "offered as the aggregator's",
    "malformed": "checkpoint fields",
    "oversized": "size must be an integer from 0 to 2^63 - 1",
    "stale": "does not include its acknowledgment of this silo's checkpoint",
    "acknowledges_another_checkpoint": "its acknowledgment names another checkpoint",
    "withheld": "handed none of its own",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_silo_refuses_a_checkpoint_that_does_not_extend_what_it_witnessed(
    witnessing_victim: tuple[VictimSilo, Path], attack: str,
) -> None:
    silo, aggregator_state = witnessing_victim
    honest = silo.aggregator.audit
    assert honest is not None
    last: list[AggregatorCheckpoint] = []  # the honest answer of the exchange before the attack
    silo.aggregator.checkpoint_reply = answer_with(honest, lambda _, genuine: last.append(genuine) or genuine)
    exchange(silo)
    before = witnessed_sizes(silo)
    if attack in ("rolled_back", "rewritten_after_rollback", "new_key"):
        honest.close()
        if attack == "new_key":  # a fresh log under a fresh key, longer than the witnessed one
            for name in ("audit.sqlite3", "signing.key", "signing.pub"):
                (aggregator_state / "audit" / name).unlink()
        else:
            roll_back(aggregator_state, keep=4)
        forged = AggregatorAudit(aggregator_state)  # the coordinator carries on from its edited files
        if attack != "rolled_back":  # and logs other events, past the witnessed size
            for index in range(before[-1] + 3):
                forged.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"other{index}"})
        silo.aggregator.checkpoint_reply = answer_with(forged)
    else:
        forgeries: dict[str, Forgery] = {
            "another_origin": lambda message, genuine: replace(genuine, checkpoint=dict(message.checkpoint)),
            "malformed": lambda _, genuine: replace(genuine, checkpoint={"origin": AGGREGATOR_ORIGIN}),
            "oversized": lambda _, genuine: replace(genuine, checkpoint={**genuine.checkpoint, "size": 2**63}),
            "stale": lambda _, genuine: replace(genuine, checkpoint=last[0].checkpoint, consistency_proof=()),
            "acknowledges_another_checkpoint": lambda _, genuine: replace(  # the previous exchange's entry
                genuine, acknowledgment=last[0].acknowledgment, acknowledgment_index=last[0].acknowledgment_index,
                inclusion_proof=tuple(honest._log().inclusion_proof(last[0].acknowledgment_index,
                                                                    int(genuine.checkpoint["size"])))),
            "withheld": lambda *_: Ack(True),
        }
        silo.aggregator.checkpoint_reply = answer_with(honest, forgeries[attack])
    exchange(silo)
    silo.assert_alive()
    assert witnessed_sizes(silo) == before, "nothing the silo refused may enter its witness store"
    refused = rejections(silo)
    assert len(refused) == 1, refused
    assert refused[0]["outcome"] == "8" and refused[0]["agents"][0]["who"] == f"silo:{VICTIM}"  # 8: serious failure
    assert ATTACKS[attack] in refused[0]["detail"]["reason"], refused[0]["detail"]
    # the silo keeps working and keeps refusing: the next exchange is refused too, not accepted
    exchange(silo)
    assert witnessed_sizes(silo) == before and len(rejections(silo)) == 2


def test_after_a_refused_answer_the_silo_still_asks_from_its_last_accepted_size(
    witnessing_victim: tuple[VictimSilo, Path],
) -> None:
    """The size the aggregator's proof starts from is the silo's own record, not anything the
    aggregator said: after a refused checkpoint the silo asks from the last accepted size, and
    an honest answer then extends it."""
    silo, _ = witnessing_victim
    honest = silo.aggregator.audit
    assert honest is not None
    accepted = witnessed_sizes(silo)[-1]
    silo.aggregator.checkpoint_reply = answer_with(
        honest, lambda _, genuine: replace(genuine, checkpoint={"origin": AGGREGATOR_ORIGIN}))
    exchange(silo)
    silo.aggregator.checkpoint_reply = answer_with(honest)
    exchange(silo)
    assert [m.aggregator_witnessed_size for m in silo.aggregator.checkpoints][-2:] == [accepted, accepted]
    assert witnessed_sizes(silo)[-1] > accepted
    assert len(rejections(silo)) == 1


def test_when_the_plan_ends_the_silo_witnesses_the_aggregators_last_entries_once(
    witnessing_victim: tuple[VictimSilo, Path],
) -> None:
    """The model export comes after the last task; the silo's exchange on PlanFinished puts
    it under a hospital's witness. Repeated PlanFinished answers (the aggregator lingers) do not
    repeat the exchange."""
    silo, _ = witnessing_victim
    audit = silo.aggregator.audit
    assert audit is not None
    exported = audit.record("model.exported", actor=AGGREGATOR_ORIGIN, detail={"plan_hash": "ab" * 32, "path": "m"})
    exchanges = len(silo.aggregator.checkpoints)
    assert witnessed_sizes(silo)[-1] <= exported
    for _ in range(3):
        silo.aggregator.script(PlanFinished("ab" * 32, 3))
    silo.settle(polls=5)
    assert len(silo.aggregator.checkpoints) == exchanges + 1
    assert witnessed_sizes(silo)[-1] > exported and rejections(silo) == []
