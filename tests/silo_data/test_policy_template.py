"""`silo-node data policy-template`: a proposed policy that registration accepts as written,
that handles every detected identifier, pins the export's dialect, and quotes no identifier
value."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from silo_node.cli.main import main
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.policy_template import template_for_export
from silo_node.datasets.registry import DatasetRegistry

from .exports import IDENTIFIER_COLUMNS, identifier_frame


def _european_export(path: Path) -> Path:
    """The identifier table as a European hospital system writes it: ';' and cp1252."""
    frame = identifier_frame()
    frame["service"] = ["Gynäkologie" if i % 2 else "Médecine" for i in range(len(frame))]
    frame.to_csv(path, index=False, sep=";", encoding="cp1252")
    return path


def test_template_registers_as_written_and_handles_every_identifier(registry: DatasetRegistry, tmp_path: Path) -> None:
    export = _european_export(tmp_path / "export.csv")
    template = template_for_export(export)
    policy = DatasetPolicy.from_document(yaml.safe_load(template.text))
    assert (policy.delimiter, policy.encoding) == (";", "cp1252")
    assert set(policy.identifiers) == set(IDENTIFIER_COLUMNS)
    assert policy.identifiers["age"] == "age_90" and policy.identifiers["ssn"] == "drop"
    assert policy.label == "outcome" and "guessed: check it" in template.text
    assert set(policy.features) == {"age", "bmi", "sex", "service"}
    assert policy.features["service"].categories == ("Gynäkologie", "Médecine")
    report = registry.add("ids", export, "tabular", policy)
    assert report.records_kept == 40
    stored = {c["column"]: c["action"] for c in report.columns}
    assert all(stored[column] in {"dropped", "generalised"} for column in IDENTIFIER_COLUMNS)
    assert stored["age"] == "generalised"


def test_template_quotes_no_identifier_value(tmp_path: Path) -> None:
    frame = identifier_frame()
    export = tmp_path / "ids.csv"
    frame.to_csv(export, index=False)
    text = template_for_export(export).text
    for column in IDENTIFIER_COLUMNS:
        for value in frame[column].astype(str).head(5):
            assert value not in text, (column, value)


def test_label_option_and_unusable_inputs(tmp_path: Path) -> None:
    export = tmp_path / "small.csv"
    pd.DataFrame({"chol": [200, 210, 190, 250], "smoker": ["y", "n", "y", "n"], "died": [0, 1, 0, 1]}).to_csv(
        export, index=False)
    template = template_for_export(export, "died")
    assert "(as given)" in template.text and template.policy.label == "died"
    assert set(template.policy.features) == {"chol", "smoker"}
    with pytest.raises(Exception) as caught:
        template_for_export(export, "dead")
    assert getattr(caught.value, "code", None) == "POLICY_INVALID" and "'dead'" in str(caught.value)


def test_cli_writes_once_and_refuses_with_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = _european_export(tmp_path / "export.csv")
    out = tmp_path / "policy.yaml"
    assert main(["data", "policy-template", str(export), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    written = out.read_text()
    DatasetPolicy.from_yaml(out)
    assert main(["data", "policy-template", str(export), "--out", str(out)]) == 1
    assert "refused [POLICY_EXISTS]" in capsys.readouterr().err and out.read_text() == written
    assert main(["data", "policy-template", str(tmp_path / "missing.csv")]) == 1
    assert "refused [MALFORMED_NOT_A_FILE]" in capsys.readouterr().err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,outcome\n1,2,0\n1,2\n3,4,1\n")
    assert main(["data", "policy-template", str(ragged)]) == 1
    assert "refused [MALFORMED_RAGGED]" in capsys.readouterr().err
    assert main(["data", "policy-template", str(export)]) == 0  # to stdout
    assert yaml.safe_load(capsys.readouterr().out)["delimiter"] == ";"


def test_a_few_patients_names_are_never_written_into_the_policy(tmp_path: Path) -> None:
    """Found by an attack review: a column naming a handful of patients was proposed as one_hot
    with the names as its categories, in a file hospitals send to the coordinator."""
    export = tmp_path / "encounters.csv"
    pd.DataFrame({"patient": ["Anna Kowalski", "Wei Zhang", "Tom Novak"] * 10,
                  "chol": [200 + i for i in range(30)], "outcome": [i % 2 for i in range(30)]}).to_csv(export, index=False)
    text = template_for_export(export, label="outcome").text
    assert "Kowalski" not in text and "Zhang" not in text and "Novak" not in text, text
    assert "patient: values shaped like people's full names (not listed" in text
