"""The imaging pipeline end to end (slow): DICOM exports with identifiers in the headers are
registered through `silo-node data add --kind dicom`, three silo processes and an aggregator
train `small_cnn` under secure aggregation (+ DP-SGD), and each hospital evaluates on its
held-out images."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipelines.imaging import run_imaging


@pytest.mark.slow
def test_imaging_federation_trains_on_deidentified_images_only(tmp_path: Path) -> None:
    out = tmp_path / "imaging"
    summary = run_imaging(out, hospitals=3, per_hospital=72, rounds=3, burned_in=2, printer=lambda _: None)

    assert summary["rounds_completed"] == 3
    per_silo = summary["held_out"]["per_silo"]
    assert set(per_silo) == set(summary["silos"])
    chance = summary["held_out"]["chance_accuracy"]
    mean_chance = sum(chance.values()) / len(chance)
    assert summary["held_out"]["mean_accuracy"] > mean_chance + 0.05, (summary["held_out"], chance)
    assert summary["held_out"]["mean_auc"] > 0.6

    # No original PatientName / PatientID value from the generated headers survives anywhere
    # under the silos' state folders (stored instances, index, database, audit log, ledger).
    originals = [pydicom.dcmread(p, stop_before_pixels=True)
                 for p in sorted((out / "hospital-exports").rglob("*.dcm"))]
    secrets = {str(ds.PatientName).encode() for ds in originals} | {str(ds.PatientID).encode() for ds in originals}
    assert len(originals) == 3 * 72 and all(secrets)
    for silo_id, state in summary["state_dirs"].items():
        files = [p for p in Path(state).rglob("*") if p.is_file()]
        assert files
        stored = b"".join(p.read_bytes() for p in files)
        leaked = sorted(v.decode() for v in secrets if v in stored)
        assert not leaked, f"{silo_id}: original identifiers under {state}: {leaked[:5]}"

    # Quarantined instances (burned-in annotation) were never trained on: every round each
    # silo trained on exactly the train split of what ingestion kept.
    for silo_id, data in summary["datasets"].items():
        ingested = data["ingested"]
        assert ingested.get("quarantined: BURNED_IN_ANNOTATION") == data["export"]["burned_in"] == 2
        kept = ingested["ingested"]
        assert kept == data["export"]["instances"] - 2
        assert data["n_train"] + data["n_test"] == kept
        trained = data["records_trained_per_round"]
        assert trained == [data["n_train"]] * 3, (silo_id, trained, data)
