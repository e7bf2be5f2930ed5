"""Excel exports (.xlsx) through openpyxl: registered like the CSV saved from them, the report
says xlsx and which sheet, a workbook with several sheets needs a declared one, bad rows are
named by their sheet row number, and every refusal leaves nothing behind. The workbooks are
real files written by openpyxl in the test."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from silo_node.datasets.errors import MalformedInput
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.policy_template import template_for_export
from silo_node.datasets.registry import DatasetRegistry

POLICY = DatasetPolicy.from_document(
    {"features": {"chol": {"transforms": ["standardize"]}, "cp": {"transforms": ["one_hot"]}}, "label": "num",
     "identifiers": {"visit": "drop"}}
)
REPO = Path(__file__).resolve().parents[2]


def _workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def _records(count: int = 12) -> list[list[object]]:
    return [["chol", "cp", "num", "visit"]] + [
        [200 + i, "Zürich" if i % 2 else "Genève", i % 2, dt.datetime(2024, 3, 1 + i)] for i in range(count)]


def _nothing_left(registry: DatasetRegistry, state_dir: Path) -> None:
    assert registry.list() == []
    assert [p.name for p in (state_dir / "datasets").iterdir() if p.name != "deid-secret.key"] == []


def _stored(state_dir: Path, name: str) -> pd.DataFrame:
    (records,) = [p for p in (state_dir / "datasets").rglob("records.parquet") if name in str(p)]
    return pd.read_parquet(records)


def test_single_sheet_workbook_registers_and_the_report_says_xlsx_and_sheet(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path
) -> None:
    path = _workbook(tmp_path / "export.xlsx", {"Export": _records()})
    report = registry.add("xl", path, "tabular", POLICY)
    assert report.records_kept == 12
    assert report.dialect == {"format": "xlsx", "sheet": "Export", "sheet_source": "the workbook's only sheet"}
    assert "read as: XLSX, sheet 'Export' (the workbook's only sheet)" in str(report)
    stored = _stored(state_dir, "xl")
    assert set(stored["cp"]) == {"Zürich", "Genève"}
    assert "visit" not in stored.columns  # not allowed by the policy: minimised away as for CSV


def test_workbook_and_its_csv_register_to_the_same_records(registry: DatasetRegistry, tmp_path: Path,
                                                           state_dir: Path) -> None:
    rows = _records()
    workbook = _workbook(tmp_path / "export.xlsx", {"Sheet1": rows})
    csv = tmp_path / "export.csv"
    csv.write_text("\n".join(",".join(v.date().isoformat() if isinstance(v, dt.datetime) else str(v) for v in row)
                             for row in rows) + "\n")
    registry.add("from-xlsx", workbook, "tabular", POLICY)
    registry.add("from-csv", csv, "tabular", POLICY)
    from_xlsx, from_csv = _stored(state_dir, "from-xlsx"), _stored(state_dir, "from-csv")
    assert list(from_xlsx.columns) == list(from_csv.columns)
    pd.testing.assert_frame_equal(from_xlsx, from_csv)


def test_several_sheets_need_a_declared_one(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    path = _workbook(tmp_path / "export.xlsx", {"Notes": [["about", "this export"]], "Patients": _records()})
    with pytest.raises(MalformedInput) as caught:
        registry.add("xl", path, "tabular", POLICY)
    assert caught.value.code == "SHEET_NOT_DECLARED"
    assert "'Notes', 'Patients'" in str(caught.value) and "`sheet`" in str(caught.value)
    _nothing_left(registry, state_dir)
    with pytest.raises(MalformedInput) as caught:
        registry.add("xl", path, "tabular", POLICY.model_copy(update={"sheet": "Patient"}))
    assert caught.value.code == "SHEET_NOT_FOUND" and "'Notes', 'Patients'" in str(caught.value)
    _nothing_left(registry, state_dir)
    report = registry.add("xl", path, "tabular", POLICY.model_copy(update={"sheet": "Patients"}))
    assert report.records_kept == 12
    assert report.dialect["sheet"] == "Patients" and report.dialect["sheet_source"] == "declared in the policy"


def test_bad_rows_are_named_by_sheet_row_number(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    rows = _records(6)
    rows[3] = rows[3] + ["stray"]  # sheet row 4: a value beyond the header's columns
    rows[5] = rows[5] + [None, "stray"]  # sheet row 6
    path = _workbook(tmp_path / "wide.xlsx", {"Data": rows})
    with pytest.raises(MalformedInput) as caught:
        registry.add("xl", path, "tabular", POLICY)
    message = str(caught.value)
    assert caught.value.code == "MALFORMED_RAGGED" and caught.value.row == 4
    assert "sheet 'Data'" in message and "row 4 (values up to column 5)" in message and "row 6 (values up to column 6)" in message
    _nothing_left(registry, state_dir)
    rows = _records(6)
    rows[4][0] = "high"  # sheet row 5: not a number
    path = _workbook(tmp_path / "typed.xlsx", {"Data": rows})
    with pytest.raises(MalformedInput) as caught:
        registry.add("xl", path, "tabular", POLICY)
    assert caught.value.code == "MALFORMED_TYPE" and caught.value.row == 5 and caught.value.column == "chol"
    assert "high" not in str(caught.value)
    _nothing_left(registry, state_dir)


def test_header_problems_and_damaged_or_legacy_workbooks_are_refused(registry: DatasetRegistry, tmp_path: Path,
                                                                     state_dir: Path) -> None:
    duplicated = _workbook(tmp_path / "dup.xlsx", {"S": [["chol", "cp", "chol"], [1, 2, 3]]})
    empty = _workbook(tmp_path / "empty.xlsx", {"S": []})
    header_only = _workbook(tmp_path / "header.xlsx", {"S": [["chol", "cp", "num"]]})
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(_workbook(tmp_path / "ok.xlsx", {"S": _records()}).read_bytes()[:300])
    legacy = tmp_path / "old.xls"
    legacy.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)
    for path, code in ((duplicated, "MALFORMED_DUPLICATE_COLUMN"), (empty, "MALFORMED_EMPTY"),
                       (header_only, "MALFORMED_EMPTY"), (damaged, "MALFORMED_SPREADSHEET"),
                       (legacy, "MALFORMED_SPREADSHEET")):
        with pytest.raises(MalformedInput) as caught:
            registry.add("xl", path, "tabular", POLICY)
        assert caught.value.code == code, (path.name, caught.value)
        _nothing_left(registry, state_dir)


def test_a_workbook_renamed_csv_is_still_read_as_a_workbook(registry: DatasetRegistry, tmp_path: Path) -> None:
    renamed = tmp_path / "export.csv"
    renamed.write_bytes(_workbook(tmp_path / "export.xlsx", {"Export": _records()}).read_bytes())
    assert registry.add("xl", renamed, "tabular", POLICY).dialect["format"] == "xlsx"


def test_policy_template_from_a_workbook_declares_its_sheet(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "export.xlsx", {"Notes": [["x"]], "Patients": _records()})
    with pytest.raises(MalformedInput) as caught:
        template_for_export(path, "num")
    assert caught.value.code == "SHEET_NOT_DECLARED"
    template = template_for_export(path, "num", sheet="Patients")
    assert 'sheet: "Patients"' in template.text or "sheet: Patients" in template.text
    assert template.policy.sheet == "Patients"


def test_policy_template_cli_on_a_workbook(tmp_path: Path) -> None:
    """`silo-node data policy-template` in a process: a coded refusal naming the sheets, no
    traceback; with `--sheet` a policy that declares it. (`data add` of an .xlsx through the CLI
    runs in tests/federation/test_readme_walkthrough.py, with a kit.)"""
    path = _workbook(tmp_path / "export.xlsx", {"Notes": [["x"]], "Patients": _records()})
    policy = tmp_path / "policy.yaml"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "silo_node.cli.main", "data", "policy-template", str(path), "--out", str(policy),
               "--label", "num"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "refused [SHEET_NOT_DECLARED]" in refused.stderr
    assert "'Notes', 'Patients'" in refused.stderr and "Traceback" not in refused.stderr and not policy.exists()
    made = subprocess.run(command + ["--sheet", "Patients"], capture_output=True, text=True, env=env, timeout=120)
    assert made.returncode == 0, made.stderr
    assert DatasetPolicy.from_yaml(policy).sheet == "Patients"


def test_a_workbook_that_unpacks_far_beyond_its_size_is_refused_before_it_is_parsed(
        registry: DatasetRegistry, tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack review's 311 KB workbook (300 MB of XML inside) held ingestion for over ten
    minutes. The floor (64 MiB) is lowered here so that a small bomb stands for a large one."""
    import silo_node.datasets.xlsx_reader as xlsx_reader

    # 9 MB of cells (each at most 32,767 characters) that compress away
    rows: list[list[object]] = [["chol", "cp", "num", "visit"]] + [
        [200 + i, f"{i}" + "4" * 30_000, i % 2, dt.datetime(2024, 3, 1)] for i in range(300)]
    bomb = _workbook(tmp_path / "export.xlsx", {"records": rows})
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(xlsx_reader, "UNPACK_RATIO_FLOOR_BYTES", 1 << 20)
    with pytest.raises(MalformedInput) as refused:
        registry.add("bomb", bomb, "tabular", POLICY)
    assert refused.value.code == "MALFORMED_SPREADSHEET" and "more than 200 times its size" in str(refused.value)
    _nothing_left(registry, state_dir)
    ordinary = _workbook(tmp_path / "ordinary.xlsx", {"records": _records(28)})
    registry.add("ordinary", ordinary, "tabular", POLICY)  # a real export is far below the ratio
