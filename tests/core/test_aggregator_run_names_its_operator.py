"""Starting a plan is a person's decision: `aggregator run` names the coordinator or refuses.

The plan.started record itself (the person, the plan's hash and ε) is checked on a real run in
tests/federation/test_readme_walkthrough.py; here, the refusal comes before anything is read,
loaded or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli.main import main


def test_aggregator_run_without_a_person_is_refused_before_anything_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HEALTHFED_OPERATOR", raising=False)
    out = tmp_path / "out"
    code = main(["run", "--config", str(tmp_path / "aggregator.yaml"), "--plan", str(tmp_path / "plan.json"),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    # the missing config file is not what it complains about: the person is checked first
    assert "refused [OPERATOR_REQUIRED]" in err and "--by NAME" in err, err
    assert not out.exists()
