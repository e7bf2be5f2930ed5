"""The `compliance` command as an officer runs it: exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compliance_support import write_processing_record
from compliance_tamper import entry, put, raw

from compliance.cli.main import main
from compliance.node_dir import NodePaths


BY = ("--by", "Carol Officer")


@pytest.fixture(autouse=True)
def _no_operator_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEALTHFED_OPERATOR", raising=False)


def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_ok(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run("verify", "--node", str(node), *BY, capsys=capsys)
    assert code == 0
    assert "VERIFIED: 16 entries" in out


def test_verify_names_the_first_bad_entry(node: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = NodePaths(node).audit_db
    doc = entry(db, 11)
    doc["detail"]["recipient"] = "somebody-else"
    with raw(db) as conn:
        put(conn, 11, doc)
    code, out, _ = run("verify", "--node", str(node), *BY, capsys=capsys)
    assert code == 1
    assert "First bad entry: 11" in out
    code, out, _ = run("verify", "--node", str(node), "--json", *BY, capsys=capsys)
    result = json.loads(out)
    assert code == 1 and result["ok"] is False and result["first_bad_index"] == 11


def test_verify_a_copied_db_with_a_pinned_key(node: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy.sqlite3"
    shutil.copy(NodePaths(node).audit_db, copy)
    pinned = NodePaths(node).public_key
    code, out, _ = run("verify", "--db", str(copy), "--public-key", str(pinned), capsys=capsys)
    assert code == 0 and "pinned key file" in out


def test_usage_and_input_errors(node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["verify"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["verify", "--db", str(NodePaths(node).audit_db)])
    assert caught.value.code == 2
    assert "--public-key" in capsys.readouterr().err
    code, _, err = run("verify", "--node", str(tmp_path / "nowhere"), *BY, capsys=capsys)
    assert code == 3 and "does not exist" in err
    code, _, err = run("export", "--node", str(node), "--from", "2025-03-01", "--to",
                       "2025-03-31", "--format", "pdf", "--out", str(tmp_path / "r.pdf"),
                       *BY, capsys=capsys)
    assert code == 3 and "PROCESSING_RECORD_MISSING" in err
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    code, _, err = run("verify", "--node", str(node), "--public-key", str(bad_key), *BY, capsys=capsys)
    assert code == 3 and "bad.pub" in err


def test_export_and_show(node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processing_record(node)
    out = tmp_path / "bundle.json"
    code, stdout, _ = run("export", "--node", str(node), "--from", "2025-03-01", "--to",
                          "2025-03-31", "--format", "fhir", "--out", str(out),
                          *BY, capsys=capsys)
    assert code == 0, stdout
    assert "Recorded as entry 16" in stdout
    code, stdout, _ = run("show", "--node", str(node), "--kind", "report.exported", capsys=capsys)
    assert code == 0 and "report.exported" in stdout and "person:Carol Officer" in stdout
    code, stdout, _ = run("show", "--node", str(node), "--from", "2025-03-02", "--to",
                          "2025-03-02", "--json", capsys=capsys)
    assert [json.loads(line)["index"] for line in stdout.splitlines()] == [3, 4, 5, 6]


def test_export_of_a_tampered_log_exits_1(node: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_processing_record(node)
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= 10")
    code, out, err = run("export", "--node", str(node), "--from", "2025-03-01", "--to",
                         "2025-03-31", "--format", "csv", "--out", str(tmp_path / "r.csv"),
                         *BY, capsys=capsys)
    assert code == 1
    assert "FAILED at entry 10" in out and "not recorded" in err
    assert (tmp_path / "r.csv").is_file()


def test_help_is_there_for_every_command() -> None:
    for command in ([], ["verify"], ["export"], ["show"]):
        completed = subprocess.run(
            [sys.executable, "-m", "compliance", *command, "--help"],
            capture_output=True, text=True, check=False, cwd=Path(__file__).parents[2],
        )
        assert completed.returncode == 0, completed.stderr
        assert "exit codes:" in completed.stdout
