"""Demo DICOM exports carry identifiers that registration removes; the image view is
class-dependent (positives are brighter at the lesion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from pipelines.imaging import imaging_plan, register_silo, silo_views
from pipelines.synthetic_dicom import write_hospital


def test_demo_export_is_deidentified_and_trainable(tmp_path: Path) -> None:
    export = write_hospital(tmp_path / "export", n=40, seed=3, size=48, burned_in=2)
    originals = [pydicom.dcmread(p) for p in sorted(export.folder.glob("*.dcm"))]
    assert all(ds.PatientName and ds.PatientID.startswith("MRN") for ds in originals)
    report = register_silo(tmp_path / "state", export.folder)
    assert report.instances == {"ingested": 38, "quarantined: BURNED_IN_ANNOTATION": 2}
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    for ds in originals:
        for value in (str(ds.PatientName), ds.PatientID, ds.PatientAddress, ds.AccessionNumber,
                      ds.StudyInstanceUID, ds.DeviceSerialNumber, "bed 4"):
            assert value.encode() not in stored, value
    train, test = silo_views(tmp_path / "state", imaging_plan(image_size=32))
    assert train.images.shape[1:] == (32, 32, 1) and train.n + test.n == 38
    # After per-image scaling a bright lesion pushes the background down: the median pixel
    # separates the classes completely on this demo data.
    median = np.median(train.images.reshape(train.n, -1), axis=1)
    positives, negatives = median[train.labels[:, 0] == 1], median[train.labels[:, 0] == 0]
    assert len(positives) and len(negatives) and positives.max() < negatives.min()
