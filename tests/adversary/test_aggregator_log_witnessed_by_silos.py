"""The coordinator cannot cut back or rewrite its own audit log unnoticed: every silo witnesses it.

The aggregator's side is the production `aggregator.audit.AggregatorAudit` (its real log, key
and witness store); the silo is the real runner of `harness.VictimSilo`, polling a scripted
aggregator that answers each checkpoint exchange as `aggregator.server` does (witness the
silo's checkpoint, answer with its own). The attacks are what a coordinator holding its own
files can do: delete its newest entries with their checkpoints (rollback), rewrite history
after a rollback, start a new log under a new key, hand over someone else's checkpoint or a
malformed one. Each is refused by the silo and recorded in the silo's own audit log, and the
rollback is shown to `compliance verify` by the checkpoints the silo kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.audit import AggregatorAudit
from compliance.cli.main import main as compliance_main
from compliance.node_dir import AGGREGATOR_ORIGIN, NodePaths
from compliance.witness import read_witnessed
from healthfed_common.wire.messages import AggregatorCheckpoint, AuditCheckpoint, TrainTask
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


def answer_as_the_aggregator(audit: AggregatorAudit, own: Callable[[AuditCheckpoint], Any] | None = None) -> Any:
    """What `aggregator.server.FederationService.submit` answers an AuditCheckpoint with: it
    witnesses the silo's checkpoint in `audit`, then hands its own (or what `own` forges)."""

    def reply(message: AuditCheckpoint) -> Any:
        problem = audit.witness(message.silo_id, dict(message.checkpoint), message.consistency_proof)
        assert problem is None, problem
        if own is not None:
            return own(message)
        return AggregatorCheckpoint(*audit.checkpoint_since(message.aggregator_witnessed_size))

    return reply


def roll_back(state: Path, keep: int) -> None:
    """The coordinator hides its newest events: deletes them AND every checkpoint covering them."""
    with raw(NodePaths(state).audit_db) as db:  # its own file: it drops the append-only triggers
        db.execute("DELETE FROM entries WHERE idx >= ?", (keep,))
        db.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))


def witnessed_sizes(silo: VictimSilo) -> list[int]:
    store = NodePaths(silo.state).witness_db
    return [c.size for c in read_witnessed(store, AGGREGATOR_ORIGIN)] if store.is_file() else []


def rejections(silo: VictimSilo) -> list[dict[str, Any]]:
    return silo.audit_events("checkpoint.rejected")


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = compliance_main(["verify", *argv, "--no-record"])
    return code, capsys.readouterr().out


@pytest.fixture
def aggregator_state(tmp_path: Path) -> Path:
    return tmp_path / "aggregator-state"


@pytest.fixture
def witnessing_victim(tmp_path: Path, aggregator_state: Path) -> Iterator[tuple[VictimSilo, AggregatorAudit]]:
    """A silo that has witnessed the honest aggregator's log twice (the second time by a
    consistency proof from the first), the aggregator having logged events in between."""
    audit = AggregatorAudit(aggregator_state)
    for index in range(6):
        audit.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"s{index}"})
    silo = VictimSilo.open(tmp_path)
    silo.aggregator.checkpoint_reply = answer_as_the_aggregator(audit)
    try:
        exchange(silo)
        audit.record("configuration.changed", actor="person:C. Lee", detail={"setting": "later"})
        exchange(silo)
        yield silo, audit
    finally:
        silo.close()
        audit.close()


def test_each_silo_keeps_the_aggregators_checkpoints_and_a_rollback_fails_verification(
    witnessing_victim: tuple[VictimSilo, AggregatorAudit], aggregator_state: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    silo, audit = witnessing_victim
    sizes = witnessed_sizes(silo)
    assert len(sizes) == 2 and 0 < sizes[0] < sizes[1], sizes  # the second extended the first by proof
    assert rejections(silo) == []
    # the silo told the aggregator what it had witnessed, so the proof could be made
    assert [m.aggregator_witnessed_size for m in silo.aggregator.checkpoints] == [0, sizes[0]]
    witness = str(NodePaths(silo.state).witness_db)
    code, out = verify(capsys, "--node", str(aggregator_state), "--witness", witness)
    assert code == 0 and "Rollback checked against 2 witnessed checkpoints" in out, out

    audit.close()
    roll_back(aggregator_state, keep=4)
    code, out = verify(capsys, "--node", str(aggregator_state))
    assert code == 0 and "Rollback UNVERIFIABLE" in out, out  # nothing inside the file shows it...
    code, out = verify(capsys, "--node", str(aggregator_state), "--witness", witness)
    assert code == 1, out  # ...the silo's copy of the checkpoints does
    assert (f"covers {sizes[0]} entries but only 4 are present: entries 4..{sizes[0] - 1} were removed "
            "together with their checkpoints (rollback)") in out, out


@pytest.mark.parametrize("attack", ["rolled_back", "rewritten_after_rollback", "new_key", "another_origin", "malformed"])
def test_the_silo_refuses_a_checkpoint_that_does_not_extend_what_it_witnessed(
    witnessing_victim: tuple[VictimSilo, AggregatorAudit], aggregator_state: Path, attack: str,
) -> None:
    silo, audit = witnessing_victim
    before = witnessed_sizes(silo)
    audit.close()
    expected = {
        "rolled_back": "the log shrank", "rewritten_after_rollback": "not consistent with the witnessed size",
        "new_key": "not the trusted key", "another_origin": "offered as the aggregator's", "malformed": "checkpoint fields",
    }[attack]
    if attack in ("rolled_back", "rewritten_after_rollback"):
        roll_back(aggregator_state, keep=4)
        forged = AggregatorAudit(aggregator_state)  # the coordinator carries on from the cut-back file
        if attack == "rewritten_after_rollback":  # and logs other events, past the witnessed size
            for index in range(before[-1]):
                forged.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"other{index}"})
        silo.aggregator.checkpoint_reply = answer_as_the_aggregator(forged)
    elif attack == "new_key":
        for name in ("audit.sqlite3", "signing.key", "signing.pub"):  # a fresh log under a fresh key
            (aggregator_state / "audit" / name).unlink()
        forged = AggregatorAudit(aggregator_state)
        for index in range(before[-1] + 3):
            forged.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"new{index}"})
        silo.aggregator.checkpoint_reply = answer_as_the_aggregator(forged)
    elif attack == "another_origin":  # the silo's own checkpoint, handed back as the aggregator's
        silo.aggregator.checkpoint_reply = answer_as_the_aggregator(
            AggregatorAudit(aggregator_state), lambda message: AggregatorCheckpoint(dict(message.checkpoint), ()))
    else:
        silo.aggregator.checkpoint_reply = answer_as_the_aggregator(
            AggregatorAudit(aggregator_state), lambda _: AggregatorCheckpoint({"origin": AGGREGATOR_ORIGIN}, ()))
    exchange(silo)
    silo.assert_alive()
    assert witnessed_sizes(silo) == before, "nothing the silo refused may enter its witness store"
    refused = rejections(silo)
    assert len(refused) == 1, refused
    assert refused[0]["outcome"] == "8" and refused[0]["agents"][0]["who"] == f"silo:{VICTIM}"  # 8: serious failure
    assert expected in refused[0]["detail"]["reason"], refused[0]["detail"]
    # the silo keeps working and keeps refusing: the next exchange is refused too, not accepted
    exchange(silo)
    assert witnessed_sizes(silo) == before and len(rejections(silo)) == 2


def test_a_silo_whose_aggregator_hands_no_checkpoint_still_works_and_witnesses_nothing(tmp_path: Path) -> None:
    """An aggregator that only acknowledges (the harness default) leaves the silo's store
    empty: the verifier then says UNVERIFIABLE for the aggregator, never 'checked'."""
    silo = VictimSilo.open(tmp_path)
    try:
        exchange(silo)
        assert witnessed_sizes(silo) == [] and rejections(silo) == []
        assert [m.aggregator_witnessed_size for m in silo.aggregator.checkpoints] == [0]
    finally:
        silo.close()


def test_the_silo_names_only_witnessed_sizes_in_its_checkpoint_messages(
    witnessing_victim: tuple[VictimSilo, AggregatorAudit],
) -> None:
    """The field the aggregator's proof starts from is the silo's own record, not anything the
    aggregator said: after a refused checkpoint the silo still asks from the last accepted size."""
    silo, audit = witnessing_victim
    accepted = witnessed_sizes(silo)[-1]
    silo.aggregator.checkpoint_reply = answer_as_the_aggregator(
        audit, lambda _: AggregatorCheckpoint({"origin": AGGREGATOR_ORIGIN}, ()))
    exchange(silo)
    silo.aggregator.checkpoint_reply = answer_as_the_aggregator(audit)
    exchange(silo)
    assert [m.aggregator_witnessed_size for m in silo.aggregator.checkpoints][-2:] == [accepted, accepted]
    assert witnessed_sizes(silo)[-1] > accepted
    assert len(rejections(silo)) == 1
