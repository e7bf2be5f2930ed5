"""Verification edge cases an attacker (or a failing disk) produces: a rollback that removes
the newest entries together with their checkpoints, truncated or overwritten files, and
multi-entry deletions whose exact range must be reported. Each runs `compliance verify` as an
officer would, on a real log written through `AuditLog` and tampered with plain sqlite3."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from compliance_support import SteppingClock, open_log, populate
from compliance_tamper import entry, put, raw

from compliance.cli.main import main
from compliance.entry import AuditEntry
from compliance.log_store import read_raw_log
from compliance.node_dir import AGGREGATOR_ORIGIN, NodePaths, trusted_public_key
from compliance.verify import verify_log
from compliance.witness import WitnessStore

BY = ("--by", "Carol Officer")


@pytest.fixture(autouse=True)
def _no_operator_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEALTHFED_OPERATOR", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def roll_back(db: Path, keep: int) -> None:
    """What an attacker holding the file does to hide the newest events: delete them AND
    every checkpoint that covers them, leaving a shorter log that is internally perfect."""
    with raw(db) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= ?", (keep,))
        conn.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))


def federation_layout(tmp_path: Path) -> tuple[Path, Path]:
    """A silo state dir and the aggregator's witness database where a single-host
    federation (`aggregator provision --out F`) keeps them; every checkpoint handed over."""
    silo = tmp_path / "federation" / "kits" / "st-marys" / "state"
    witness_db = tmp_path / "federation" / "aggregator" / "state" / "audit" / "witness.sqlite3"
    with open_log(silo, SteppingClock()) as log, WitnessStore.open(witness_db) as store:
        store.accept(log.sign_checkpoint(), [], log.public_key)  # the empty log, at enrolment
        populate(log)
        store.accept(log.sign_checkpoint(), [], log.public_key)  # extends size 0: no proof needed
    return silo, witness_db


def test_rollback_without_a_witness_is_reported_unverifiable(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roll_back(NodePaths(node).audit_db, keep=10)
    code, out, _ = run(capsys, "verify", "--node", str(node), "--no-record")
    assert code == 0  # nothing inside the file can show it...
    assert "Rollback UNVERIFIABLE" in out and "Witness:      none found" in out  # ...and it says so
    code, out, _ = run(capsys, "verify", "--node", str(node), "--no-record", "--json")
    assert json.loads(out)["rollback"] == "UNVERIFIABLE"


def test_rollback_is_caught_by_the_witness_found_automatically(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    silo, witness_db = federation_layout(tmp_path)
    code, out, _ = run(capsys, "verify", "--node", str(silo), *BY)
    assert code == 0 and "found automatically" in out and "Rollback checked against" in out
    roll_back(NodePaths(silo).audit_db, keep=10)
    code, out, _ = run(capsys, "verify", "--node", str(silo), *BY)
    assert code == 1, out
    assert str(witness_db) in out and "found automatically" in out
    assert "entries 10..15 were removed together with their checkpoints (rollback)" in out
    assert "First bad entry: 10" in out


def test_rollback_is_caught_by_the_size_the_silo_saw_acknowledged(node: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """No witness database on this host, but the silo's own database recorded that the
    aggregator accepted a checkpoint of 16 entries (silo_node.released_results)."""
    with sqlite3.connect(NodePaths(node).silo_db) as silo_db:
        silo_db.execute("CREATE TABLE witnessed_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL)")
        silo_db.execute("INSERT INTO witnessed_checkpoint VALUES (1, 16)")
    code, out, _ = run(capsys, "verify", "--node", str(node), "--no-record")
    assert code == 0 and "acknowledged size 16" in out
    roll_back(NodePaths(node).audit_db, keep=12)
    code, out, _ = run(capsys, "verify", "--node", str(node), "--no-record")
    assert code == 1
    assert "entries 12..15 were removed together with their checkpoints (rollback)" in out


@pytest.mark.parametrize("how", ["half", "header", "empty"])
def test_a_truncated_or_damaged_log_fails_with_exit_1(tmp_path: Path, how: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node"
    with open_log(node, SteppingClock()) as log:
        populate(log, rounds=40)
    db = NodePaths(node).audit_db
    data = db.read_bytes()
    assert len(data) > 8 * 4096
    if how == "half":
        db.write_bytes(data[: len(data) // 2])
    elif how == "header":
        db.write_bytes(b"\0" * 100 + data[100:])
    else:
        db.write_bytes(b"")
    code, out, err = run(capsys, "verify", "--node", str(node), *BY)
    assert code == 1, (out, err)
    assert "FAILED [LOG_CORRUPT]" in out
    assert "not a HealthFed audit log" not in out + err
    code, out, _ = run(capsys, "verify", "--node", str(node), "--json", *BY)
    assert code == 1 and json.loads(out)["error"] == "LOG_CORRUPT"


def test_a_file_that_never_was_an_audit_log_is_an_input_error(node: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    key = str(NodePaths(node).public_key)
    text = tmp_path / "notes.txt"
    text.write_text("minutes of the steering committee\n" * 50)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE patients (id INTEGER)")
    for path in (text, other):
        code, _, err = run(capsys, "verify", "--db", str(path), "--public-key", key)
        assert code == 3 and "not a HealthFed audit log" in err


def test_a_deleted_range_is_reported_exactly(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx BETWEEN 5 AND 9")
    result = verify(node)
    assert result.problem is not None and result.problem.index == 5
    assert "entries 5..9 were removed" in result.problem.reason


def test_a_deleted_range_with_its_checkpoints_is_reported_exactly(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx BETWEEN 5 AND 9")
        conn.execute("DELETE FROM checkpoints WHERE size BETWEEN 6 AND 10")
    result = verify(node)
    assert result.problem is not None and result.problem.index == 5
    assert "entries 5..9 were removed" in result.problem.reason


def test_a_renumbered_deleted_range_is_sized_from_the_signed_checkpoints(node: Path) -> None:
    db = NodePaths(node).audit_db
    docs = [entry(db, i) for i in range(16)]
    with raw(db) as conn:
        conn.execute("DELETE FROM entries")
        for new_index, doc in enumerate(d for i, d in enumerate(docs) if not 5 <= i <= 9):
            conn.execute("INSERT INTO entries(idx, entry) VALUES (?, ?)", (new_index, b"{}"))
            put(conn, new_index, dict(doc, index=new_index))
    result = verify(node)
    assert result.problem is not None and result.problem.index == 5
    assert "entries 5..9 were probably removed" in result.problem.reason


def test_verification_records_itself_naming_the_person(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", "--node", str(node))
    assert code == 3 and "OPERATOR_REQUIRED" in err  # nobody named: refused before anything
    code, out, _ = run(capsys, "verify", "--node", str(node), *BY)
    assert code == 0 and "Recorded as entry 16 (audit.verified)" in out
    last = AuditEntry.from_bytes(read_raw_log(NodePaths(node).audit_db).entries[-1][1])
    assert (last.kind, last.actor) == ("audit.verified", "person:Carol Officer")
    assert last.detail["entries"] == 16 and last.detail["rollback"] == "unverifiable"
    code, out, _ = run(capsys, "verify", "--node", str(node), "--no-record")
    assert code == 0 and "Recorded" not in out
    assert len(read_raw_log(NodePaths(node).audit_db).entries) == 17


def test_a_failed_verification_appends_nothing(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = NodePaths(node).audit_db
    doc = entry(db, 3)
    doc["detail"]["note"] = "edited"
    with raw(db) as conn:
        put(conn, 3, doc)
    code, out, _ = run(capsys, "verify", "--node", str(node), *BY)
    assert code == 1 and "Recorded" not in out
    assert len(read_raw_log(db).entries) == 16


def verify(node: Path):  # type: ignore[no-untyped-def]
    paths = NodePaths(node)
    key, _ = trusted_public_key(None, paths)
    return verify_log(paths.audit_db, key)


def aggregator_layout(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A single-host federation where two hospitals witnessed the aggregator's log: riverside
    at 8 entries, st-marys later at 16 (each store as `silo_node.aggregator_witness` keeps it).
    riverside's store is the first one found (kits are read in name order)."""
    federation = tmp_path / "federation"
    aggregator = federation / "aggregator" / "state"
    stores = {s: federation / "kits" / s / "state" / "audit" / "witness.sqlite3" for s in ("riverside", "st-marys")}
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        for index in range(8):
            log.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"s{index}"})
        with WitnessStore.open(stores["riverside"]) as store:
            store.accept(log.sign_checkpoint(), [], log.public_key)
        for index in range(8):
            log.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"t{index}"})
        with WitnessStore.open(stores["st-marys"]) as store:
            store.accept(log.sign_checkpoint(), [], log.public_key)
    return aggregator, stores


def test_the_aggregators_rollback_is_caught_by_every_hospitals_witness_found_automatically(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cut back to 12 entries, the log still holds everything riverside saw (8): only st-marys's
    store (16) shows the rollback, so every hospital's store must be read, not the first found."""
    aggregator, stores = aggregator_layout(tmp_path)
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record")
    assert code == 0 and "Rollback checked against 2 witnessed checkpoints (up to size 16)" in out, out
    assert all(f"{path} (found automatically" in out for path in stores.values()), out
    roll_back(NodePaths(aggregator).audit_db, keep=12)
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record")
    assert code == 1, out
    assert "covers 16 entries but only 12 are present: entries 12..15 were removed" in out
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record", "--witness", str(stores["riverside"]))
    assert code == 0, out  # the hospital that saw less cannot tell


def test_a_coordinator_that_showed_two_hospitals_different_histories_fails_against_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Equivocation: after 8 common entries the coordinator keeps two copies of its log (same
    key), hands st-marys a checkpoint of one (10 entries) and riverside one of the other (9),
    then keeps the first file. Each hospital alone sees a consistent history."""
    federation = tmp_path / "federation"
    aggregator = federation / "aggregator" / "state"
    fork = tmp_path / "fork" / "state"
    stores = {s: federation / "kits" / s / "state" / "audit" / "witness.sqlite3" for s in ("riverside", "st-marys")}
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        for index in range(8):
            log.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"s{index}"})
    shutil.copytree(aggregator, fork)
    for state, silo, shown in ((aggregator, "st-marys", ["kept", "kept too"]), (fork, "riverside", ["hidden"])):
        with open_log(state, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
            for what in shown:
                log.record("configuration.changed", actor="person:C. Lee", detail={"setting": what})
            with WitnessStore.open(stores[silo]) as store:
                store.accept(log.sign_checkpoint(), [], log.public_key)
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:  # it carries on
        log.record("configuration.changed", actor="person:C. Lee", detail={"setting": "later"})
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record", "--witness", str(stores["st-marys"]))
    assert code == 0, out  # one hospital alone sees a consistent history
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record",
                       "--witness", str(stores["st-marys"]), "--witness", str(stores["riverside"]))
    assert code == 1 and "(size 9, " in out and "entries 0..8 no longer produce the root the witness holds" in out, out
    assert f"held by {stores['riverside']}" in out  # the witness that was shown the hidden branch
    assert f"matches the log ({stores['st-marys']}), so witnesses were shown different histories (equivocation)" in out


def test_a_node_cannot_witness_its_own_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The coordinator cuts its log back and files a checkpoint of the short log in its own
    witness store: that store is never read as a witness of its own log, and naming it is refused."""
    aggregator, _ = aggregator_layout(tmp_path)
    for store in aggregator.parent.parent.glob("kits/*/state/audit/witness.sqlite3"):
        store.unlink()  # no hospital's copy at hand
    roll_back(NodePaths(aggregator).audit_db, keep=12)
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log, \
            WitnessStore.open(NodePaths(aggregator).witness_db) as own:
        own.accept(log.sign_checkpoint(), [], log.public_key)
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record")
    assert code == 0 and "Rollback UNVERIFIABLE" in out and "Witness:      none found" in out, out
    code, _, err = run(capsys, "verify", "--node", str(aggregator), "--no-record",
                       "--witness", str(NodePaths(aggregator).witness_db))
    assert code == 3 and "WITNESS_IS_OWN_STORE" in err, err


def test_entries_after_the_last_witnessed_checkpoint_are_named_as_unwitnessed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    aggregator, _ = aggregator_layout(tmp_path)
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        for index in range(3):
            log.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"u{index}"})
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record")
    assert code == 0 and "Rollback checked against 2 witnessed checkpoints (up to size 16)" in out, out
    assert "Entries 16..18 came after the last witnessed checkpoint: no witness vouches for them yet" in out
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record", "--json")
    assert json.loads(out)["entries_vouched_for_by_a_witness"] == 16
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log, \
            WitnessStore.open(aggregator.parent.parent / "kits" / "st-marys" / "state" / "audit" / "witness.sqlite3") as store:
        store.accept(log.sign_checkpoint(), log.consistency_proof(16, 19), log.public_key)
        log.record("configuration.changed", actor="person:C. Lee", detail={"setting": "last"})
    code, out, _ = run(capsys, "verify", "--node", str(aggregator), "--no-record")
    assert code == 0 and "Entry 19 came after the last witnessed checkpoint: no witness vouches for it yet" in out


def test_only_a_checkpoint_signed_with_the_logs_key_is_named_as_agreeing(tmp_path: Path) -> None:
    """An equivocation names the store holding a checkpoint the log matches. A checkpoint with a
    broken signature, or signed under another key, agrees by nothing, so its store is not named
    (a cold review found such stores offered to the officer as evidence)."""
    import dataclasses
    from datetime import datetime, timezone

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from compliance.checkpoints import sign_checkpoint
    from compliance.log_store import read_raw_log
    from compliance.verify import verify_raw_log

    aggregator, fork = tmp_path / "aggregator", tmp_path / "fork"
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        for index in range(8):
            log.record("configuration.changed", actor="person:C. Lee", detail={"setting": f"s{index}"})
        key = log.public_key
    shutil.copytree(aggregator, fork)
    with open_log(fork, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        log.record("configuration.changed", actor="person:C. Lee", detail={"setting": "hidden"})
        hidden = log.sign_checkpoint()
    with open_log(aggregator, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        for what in ("kept", "kept too"):
            log.record("configuration.changed", actor="person:C. Lee", detail={"setting": what})
        kept = log.sign_checkpoint()
    raw = read_raw_log(NodePaths(aggregator).audit_db)
    honest = verify_raw_log(raw, key, [("A", [hidden]), ("B", [kept])])
    assert "matches the log (B), so witnesses were shown different histories" in honest.problem.reason  # type: ignore[union-attr]
    forged = dataclasses.replace(kept, signature=bytes(64))
    rekeyed = sign_checkpoint(Ed25519PrivateKey.generate(), AGGREGATOR_ORIGIN, kept.size, kept.root,
                              datetime.now(timezone.utc))
    for bogus in (forged, rekeyed):
        result = verify_raw_log(raw, key, [("A", [hidden]), ("B", [bogus])])
        assert not result.ok and "held by A" in result.problem.reason  # type: ignore[union-attr]
        assert "(B)" not in result.problem.reason, result.problem.reason  # type: ignore[union-attr]
