"""Tabular registration: malformed inputs give errors naming file and row/column, failures
leave nothing behind, CSV and Parquet both work, and every step reaches the audit sink."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from silo_node.datasets.errors import DataLayerError, DatasetExists, DatasetNotFound, MalformedInput, PolicyInvalid
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry

from .conftest import RecordingAudit
from .exports import HEART_POLICY, heart_csv

POLICY = DatasetPolicy.from_document(
    {"features": {"chol": {"transforms": ["standardize"]}, "cp": {"transforms": ["one_hot"]}}, "label": "num"}
)


def _write(tmp_path: Path, data: bytes, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_nothing_left(registry: DatasetRegistry, state_dir: Path) -> None:
    assert registry.list() == []
    leftovers = [p.name for p in (state_dir / "datasets").iterdir() if p.name != "deid-secret.key"]
    assert leftovers == []


@pytest.mark.parametrize(
    ("data", "code", "row", "column"),
    [
        (b"", "MALFORMED_EMPTY", None, None),
        (b"  \n\n", "MALFORMED_EMPTY", None, None),
        (b"chol,cp,num\n", "MALFORMED_EMPTY", None, None),
        # not UTF-8, so read as cp1252 (the report says so): the odd bytes are then not a number
        (b"chol,cp,num\n200,1,0\n210,2,1\n\xff\xfe,3,0\n", "MALFORMED_TYPE", 4, "chol"),
        (b"chol,cp,num\n200,1,0\n210,2\n", "MALFORMED_RAGGED", 3, None),
        (b"chol,cp,num\n200,1,0\n210,2,1,9\n", "MALFORMED_RAGGED", 3, None),
        (b"chol,cp,chol,num\n200,1,2,0\n", "MALFORMED_DUPLICATE_COLUMN", 1, "chol"),
        (b"chol,,num\n200,1,0\n", "MALFORMED_HEADER", 1, None),
        (b"chol,cp,num\n200,1,0\n210,2,1\nhigh,3,0\n", "MALFORMED_TYPE", 4, "chol"),
        (b'chol,cp,num\n200,1,0\n"210,2,1\n', "MALFORMED_CSV", None, None),
        (b"chol,cp,num\n200,1,0\n2\x0010,2,1\n", "MALFORMED_ENCODING", 3, None),
        # a field over the csv module's limit among the lines read to find the separator (was a traceback)
        pytest.param(b"chol,cp,num\n200,1,0\n\"" + b"9" * 200_000 + b"\",2,1\n", "MALFORMED_CSV", 3, None,
                     id="field-over-the-csv-limit"),
    ],
)
def test_malformed_csv_names_file_and_row(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path, data: bytes, code: str, row: int | None, column: str | None
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(MalformedInput) as caught:
        registry.add("bad", path, "tabular", POLICY)
    error = caught.value
    assert error.code == code
    assert error.file == str(path) and str(path) in str(error)
    if row is not None:
        assert error.row == row and f"row {row}" in str(error)
    if column is not None:
        assert error.column == column
    assert isinstance(error, ValueError) and isinstance(error, DataLayerError)
    _assert_nothing_left(registry, state_dir)


def test_malformed_message_never_quotes_the_value(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write(tmp_path, b"chol,cp,num\n200,1,0\nJohn Smith,2,1\n")
    with pytest.raises(MalformedInput) as caught:
        registry.add("bad", path, "tabular", POLICY)
    assert "John" not in str(caught.value)


def test_other_encodings_are_accepted_when_declared(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write(tmp_path, "chol,cp,num\n200,Zürich,0\n210,Genève,1\n".encode("latin-1"))
    policy = POLICY.model_copy(update={"encoding": "latin-1"})
    report = registry.add("latin", path, "tabular", policy)
    assert report.records_kept == 2


def test_parquet_is_ingested_and_malformed_parquet_is_refused(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    frame = pd.DataFrame({"chol": [200.0, 210.5, None, 190.0], "cp": [1, 2, 3, 4], "num": [0, 1, 0, 1], "note": ["a", "b", "c", "d"]})
    good = tmp_path / "export.parquet"
    frame.to_parquet(good)
    report = registry.add("pq", good, "tabular", POLICY)
    assert report.records_kept == 4 and report.notes[0].startswith("format parquet")
    assert {c["column"]: c["action"] for c in report.columns}["note"] == "dropped"
    truncated = _write(tmp_path, good.read_bytes()[:-20], "cut.parquet")
    with pytest.raises(MalformedInput) as caught:
        registry.add("cut", truncated, "tabular", POLICY)
    assert caught.value.code == "MALFORMED_PARQUET"
    duplicated = tmp_path / "dup.parquet"
    pq.write_table(pa.table([pa.array([1]), pa.array([2]), pa.array([0])], names=["chol", "chol", "num"]), duplicated)
    with pytest.raises(MalformedInput) as caught:
        registry.add("dup", duplicated, "tabular", POLICY)
    assert caught.value.code == "MALFORMED_DUPLICATE_COLUMN" and caught.value.column == "chol"
    wrong = tmp_path / "wrong.parquet"
    pd.DataFrame({"chol": ["200", "high"], "cp": [1, 2], "num": [0, 1]}).to_parquet(wrong)
    with pytest.raises(MalformedInput) as caught:
        registry.add("wrong", wrong, "tabular", POLICY)
    assert (caught.value.code, caught.value.row, caught.value.column) == ("MALFORMED_TYPE", 2, "chol")
    assert [d.name for d in registry.list()] == ["pq"]


def test_policy_column_missing_from_export_is_refused(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    path = _write(tmp_path, b"chol,num\n200,0\n")
    with pytest.raises(PolicyInvalid, match="'cp'"):
        registry.add("x", path, "tabular", POLICY)
    _assert_nothing_left(registry, state_dir)


def test_registration_is_atomic_when_the_database_insert_fails(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path, conn
) -> None:
    # A trigger makes the real INSERT fail after the stored copy has been written.
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON datasets BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    path = heart_csv("switzerland", tmp_path / "swiss.csv")
    with pytest.raises(Exception, match="disk full"):
        registry.add("swiss", path, "tabular", DatasetPolicy.from_document(HEART_POLICY))
    conn.execute("DROP TRIGGER refuse")
    _assert_nothing_left(registry, state_dir)
    registry.add("swiss", path, "tabular", DatasetPolicy.from_document(HEART_POLICY))
    assert [d.name for d in registry.list()] == ["swiss"]


def test_list_show_remove_and_audit(registry: DatasetRegistry, tmp_path: Path, state_dir: Path, audit: RecordingAudit) -> None:
    path = heart_csv("hungarian", tmp_path / "hu.csv")
    policy = DatasetPolicy.from_document(HEART_POLICY)
    registry.add("heart", path, "tabular", policy, actor="it-admin")
    with pytest.raises(DatasetExists):
        registry.add("heart", path, "tabular", policy)
    info = registry.show("heart")
    assert info.n_records == 294 and info.n_train + info.n_test == 294
    assert info.registered_by == "it-admin" and info.policy == policy
    assert "allowed features" in str(info) and "slope" not in info.schema
    path.unlink()  # the silo never re-reads the original export
    registry.remove("heart", actor="it-admin")
    with pytest.raises(DatasetNotFound):
        registry.show("heart")
    _assert_nothing_left(registry, state_dir)
    assert audit.kinds() == ["dataset.deidentified", "dataset.registered", "dataset.registered", "dataset.removed"]
    assert audit.events[2]["outcome"] == "minor_failure" and audit.events[2]["detail"] == {"code": "DATASET_EXISTS"}


def test_bad_dataset_names_are_refused(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = heart_csv("va", tmp_path / "va.csv")
    for name in ["../escape", "", "a/b", ".hidden"]:
        with pytest.raises(PolicyInvalid):
            registry.add(name, path, "tabular", DatasetPolicy.from_document(HEART_POLICY))


def _stored(state_dir: Path, name: str) -> pd.DataFrame:
    (records,) = [p for p in (state_dir / "datasets").rglob("records.parquet") if name in str(p)]
    return pd.read_parquet(records)


EUROPEAN = POLICY.model_copy(update={"features": {
    "chol": POLICY.features["chol"], "cp": POLICY.features["cp"].model_copy(update={"transforms": ("one_hot",)})}})


def test_semicolon_latin1_export_is_registered_and_the_report_says_how_it_was_read(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path
) -> None:
    rows = "".join(f"{200 + i};{'Zürich' if i % 2 else 'Genève'};{i % 2}\r\n" for i in range(12))
    path = _write(tmp_path, ("chol;cp;num\r\n" + rows).encode("latin-1"))
    report = registry.add("eu", path, "tabular", EUROPEAN)
    assert report.records_kept == 12
    assert report.dialect["delimiter"] == ";" and report.dialect["delimiter_source"] == "sniffed"
    assert report.dialect["encoding"] == "cp1252" and report.dialect["encoding_source"].startswith("detected")
    assert "read as: CSV, delimiter semicolon ';' (sniffed), encoding cp1252 (detected" in str(report)
    stored = _stored(state_dir, "eu")
    assert set(stored["cp"]) == {"Zürich", "Genève"}  # decoded, not mojibake
    # the report survives the database round trip (the CLI's `data show` prints it from there)
    assert registry.show("eu").report.dialect == report.dialect


@pytest.mark.parametrize(
    ("data", "delimiter", "encoding"),
    [
        ("chol\tcp\tnum\n200\t1\t0\n210\t2\t1\n".encode("utf-16"), "\t", "utf-16"),  # Excel "Unicode text"
        ("chol|cp|num\n200|1|0\n210|2|1\n".encode("utf-8-sig"), "|", "utf-8-sig"),
        (b'"chol","cp","num"\n"200","a, b","0"\n"210","c","1"\n', ",", "utf-8"),
    ],
)
def test_other_dialects_are_detected(registry: DatasetRegistry, tmp_path: Path, data: bytes, delimiter: str, encoding: str) -> None:
    report = registry.add("d", _write(tmp_path, data), "tabular", POLICY)
    assert (report.dialect["delimiter"], report.dialect["encoding"]) == (delimiter, encoding)
    assert report.records_kept == 2


def test_declared_dialect_wins_over_detection(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    data = "chol;cp;num\n200;1;0\n210;Genève;1\n".encode("latin-1")
    path = _write(tmp_path, data)
    declared_utf8 = POLICY.model_copy(update={"encoding": "utf-8"})
    with pytest.raises(MalformedInput) as caught:
        registry.add("x", path, "tabular", declared_utf8)
    assert (caught.value.code, caught.value.row) == ("MALFORMED_ENCODING", 3)
    declared_comma = POLICY.model_copy(update={"delimiter": ","})
    with pytest.raises(PolicyInvalid, match="'chol'"):  # one column named 'chol;cp;num'
        registry.add("x", path, "tabular", declared_comma)
    _assert_nothing_left(registry, state_dir)
    report = registry.add("x", path, "tabular", POLICY.model_copy(update={"delimiter": ";", "encoding": "latin-1"}))
    assert report.dialect["delimiter_source"] == report.dialect["encoding_source"] == "declared in the policy"


def test_policy_file_declares_dialect_in_yaml(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("features: {chol: {transforms: [standardize]}}\nlabel: num\ndelimiter: ';'\nencoding: cp1252\n")
    policy = DatasetPolicy.from_yaml(policy_file)
    assert (policy.delimiter, policy.encoding) == (";", "cp1252")
    policy_file.write_text("features: {chol: {transforms: [standardize]}}\nlabel: num\ndelimiter: ';;'\n")
    with pytest.raises(PolicyInvalid, match="delimiter"):
        DatasetPolicy.from_yaml(policy_file)


def test_every_ragged_row_is_named_up_to_the_limit(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    lines = ["chol,cp,num"]
    bad_rows = []
    for i in range(60):
        if i % 2:
            lines.append(f"{200 + i},1")
            bad_rows.append(len(lines))  # physical line number, header = 1
        else:
            lines.append(f"{200 + i},1,0")
    path = _write(tmp_path, ("\n".join(lines) + "\n").encode())
    with pytest.raises(MalformedInput) as caught:
        registry.add("ragged", path, "tabular", POLICY)
    message = str(caught.value)
    assert caught.value.code == "MALFORMED_RAGGED" and caught.value.row == bad_rows[0]
    assert "30 row(s) do not have the header's 3 fields" in message
    for row in bad_rows[:20]:
        assert f"row {row} (2 fields)" in message
    assert f"row {bad_rows[20]} " not in message and "and 10 more" in message
    assert "set `delimiter` in the policy" in message
    _assert_nothing_left(registry, state_dir)


def test_spreadsheet_workbook_is_refused_with_what_to_do(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    import zipfile

    workbook = tmp_path / "export.xlsx"
    with zipfile.ZipFile(workbook, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    renamed = _write(tmp_path, workbook.read_bytes(), "export.csv")  # magic bytes, not the suffix, decide
    for path in (workbook, renamed):
        with pytest.raises(MalformedInput) as caught:
            registry.add("xl", path, "tabular", POLICY)
        assert caught.value.code == "MALFORMED_SPREADSHEET" and "CSV" in str(caught.value)
    _assert_nothing_left(registry, state_dir)


class _AuditThatFails(RecordingAudit):
    """The node's audit log refusing a write (locked by a long transaction, disk full)."""

    def __init__(self, fails_on: str) -> None:
        super().__init__()
        self.fails_on = fails_on

    def record(self, kind: str, **fields) -> None:  # type: ignore[no-untyped-def, override]
        if kind == self.fails_on:
            import sqlite3

            raise sqlite3.OperationalError("database is locked")
        super().record(kind, **fields)


@pytest.mark.parametrize("fails_on", ["dataset.deidentified", "dataset.registered"])
def test_a_registration_whose_audit_entry_cannot_be_written_is_not_made(
        conn, state_dir: Path, tmp_path: Path, fails_on: str) -> None:  # type: ignore[no-untyped-def]
    """Found by an attack review: the dataset was committed before its audit entries were
    written, so a locked log left it registered with no record and the command said it failed."""
    from silo_node.datasets.errors import AuditWriteFailed

    registry = DatasetRegistry(conn, state_dir / "datasets", audit=_AuditThatFails(fails_on))
    path = heart_csv("switzerland", tmp_path / "swiss.csv")
    with pytest.raises(AuditWriteFailed) as refused:
        registry.add("swiss", path, "tabular", DatasetPolicy.from_document(HEART_POLICY))
    assert refused.value.code == "AUDIT_WRITE_FAILED" and "the dataset was not registered" in str(refused.value)
    _assert_nothing_left(registry, state_dir)


def test_a_removal_whose_audit_entry_cannot_be_written_keeps_the_dataset(
        conn, state_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from silo_node.datasets.errors import AuditWriteFailed

    path = heart_csv("switzerland", tmp_path / "swiss.csv")
    DatasetRegistry(conn, state_dir / "datasets", audit=RecordingAudit()).add(
        "swiss", path, "tabular", DatasetPolicy.from_document(HEART_POLICY))
    registry = DatasetRegistry(conn, state_dir / "datasets", audit=_AuditThatFails("dataset.removed"))
    with pytest.raises(AuditWriteFailed):
        registry.remove("swiss", actor="it-admin")
    assert [d.name for d in registry.list()] == ["swiss"] and (state_dir / "datasets" / "swiss").is_dir()


def test_a_registration_killed_midway_leaves_nothing_the_next_open_keeps(
        conn, state_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Found by an attack review: a `data add` killed mid-ingestion left its staging folder of
    de-identified copies for good. The next open of the registry removes a staging folder no
    registration holds, and leaves alone one whose registration is still running."""
    import fcntl
    import os

    registry = DatasetRegistry(conn, state_dir / "datasets", audit=RecordingAudit())
    killed, claim = registry._claim_staging("imgs")
    (killed / "instances").mkdir()
    (killed / "instances" / "copy.dcm").write_bytes(b"de-identified copy")
    os.close(claim)  # what the kernel does when the process is killed
    running, held = registry._claim_staging("other")
    try:
        DatasetRegistry(conn, state_dir / "datasets", audit=RecordingAudit())
        assert not killed.exists()
        assert running.is_dir()  # its lock is held: a registration in another process
        fcntl.flock(held, fcntl.LOCK_UN)
    finally:
        os.close(held)
    DatasetRegistry(conn, state_dir / "datasets", audit=RecordingAudit())
    assert not running.exists()


def test_registries_opened_by_several_processes_at_once_all_clean_up_without_crashing(
        conn, state_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Found by a cold review: after killed registrations, processes opening the registry at
    once raced each other's cleanup, and all but one failed with FileNotFoundError."""
    import subprocess
    import sys
    import time

    store = state_dir / "datasets"
    DatasetRegistry(conn, store, audit=RecordingAudit())
    for number in range(300):
        folder = store / f".staging-a-{number}"
        folder.mkdir()
        (folder / ".in-use").write_text("x")  # an unlocked marker: its registration was killed
        (folder / "copy").write_text("y")
    start = time.time() + 3
    script = ("import sys, time; from pathlib import Path; from silo_node.storage import open_silo_db; "
              "from silo_node.datasets.registry import DatasetRegistry\n"
              f"while time.time() < {start}: pass\n"
              f"DatasetRegistry(open_silo_db(Path({str(state_dir / 'silo.sqlite3')!r})), Path({str(store)!r}))")
    processes = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
                 for _ in range(5)]
    failures = [p.communicate(timeout=120)[1] for p in processes if p.wait(timeout=120) != 0]
    assert failures == [], failures[0][-500:]
    assert not list(store.glob(".staging-*"))
