"""Demo DICOM exports for the imaging pipeline, written with pydicom.

Each hospital folder holds single-frame MONOCHROME2 secondary-capture images whose headers
are full of identifiers, as real exports are (patient name, ID, birth date, address, phone,
accession number, physicians, institution, device serial, UIDs, a private tag), plus a
labels.csv (file,label). The class shows in the pixels: positives carry a bright round
"lesion" at a random place on a noisy textured background, negatives do not. A few
instances declare BurnedInAnnotation = YES so the quarantine shows in the demo.

    python -m pipelines.synthetic_dicom OUT_DIR --hospitals 3 --per-hospital 60
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

FIRST = ["JOHN", "MARIA", "WEI", "FATIMA", "OLGA", "KWAME", "SOFIA", "RAJ", "LENA", "PEDRO"]
LAST = ["SMITH", "GARCIA", "ZHANG", "OKAFOR", "IVANOVA", "MENSAH", "ROSSI", "PATEL", "BERG", "SILVA"]
HOSPITALS = ["St Elsewhere General", "Mercy County Hospital", "Lakeside University Clinic", "Northgate Medical"]


@dataclass(frozen=True)
class ExportSummary:
    folder: Path
    instances: int
    positives: int
    burned_in: int


def lesion_image(rng: np.random.Generator, size: int, positive: bool) -> np.ndarray:
    """uint16 image: smooth anatomy-like background plus noise; a bright disc if positive."""
    y, x = np.mgrid[0:size, 0:size] / size
    background = 900 + 300 * np.sin(6 * x + rng.uniform(0, 6)) * np.cos(5 * y + rng.uniform(0, 6))
    image = background + rng.normal(0, 60, (size, size))
    if positive:
        cy, cx = rng.uniform(0.25, 0.75, 2)
        radius = rng.uniform(0.08, 0.15)
        image += 1400 * (((y - cy) ** 2 + (x - cx) ** 2) < radius**2)
    return np.clip(image, 0, 4095).astype(np.uint16)


def _instance(rng: np.random.Generator, hospital: str, index: int, size: int, positive: bool, burned: bool) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "PACS_EXPORT"
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    first, last = FIRST[int(rng.integers(10))], LAST[int(rng.integers(10))]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.PatientName = f"{last}^{first}^{chr(65 + index % 26)}"
    ds.PatientID = f"MRN{int(rng.integers(100000, 999999))}"
    ds.PatientBirthDate = f"{int(rng.integers(1930, 2000))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    ds.PatientSex = "F" if index % 2 else "M"
    ds.PatientAge = f"{int(rng.integers(20, 95)):03d}Y"
    ds.PatientAddress = f"{int(rng.integers(1, 999))} Main Street, Springfield"
    ds.PatientTelephoneNumbers = f"555-{int(rng.integers(1000, 9999))}"
    ds.OtherPatientIDs = f"SSN{int(rng.integers(100, 999))}-{int(rng.integers(10, 99))}-{int(rng.integers(1000, 9999))}"
    ds.AccessionNumber = f"ACC{int(rng.integers(10**6, 10**7))}"
    ds.StudyID = f"S{index:05d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"2023{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.PerformingPhysicianName = "QUINN^MICHAELA"
    ds.OperatorsName = "TECH^TERRY"
    ds.InstitutionName = hospital
    ds.InstitutionAddress = "1 Hospital Road, Springfield"
    ds.StationName = "XR-ROOM-2"
    ds.DeviceSerialNumber = f"SN{int(rng.integers(10**5, 10**6))}"
    ds.StudyDescription = f"Chest film for {first} {last}"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES" if burned else "NO"
    ds.add_new(0x00110010, "LO", "HOSPITAL_PRIVATE")
    ds.add_new(0x00111001, "LO", f"bed 4, ward {first}")
    pixels = lesion_image(rng, size, positive)
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    return ds


def write_hospital(folder: Path, *, n: int, seed: int, size: int = 64, positive_share: float = 0.5,
                   burned_in: int = 1, hospital: str = "St Elsewhere General") -> ExportSummary:
    """Writes n instances (file names carry the patient's name, as careless exports do)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    positives = 0
    for index in range(n):
        positive = bool(rng.random() < positive_share)
        ds = _instance(rng, hospital, index, size, positive, burned=index < burned_in)
        name = f"{str(ds.PatientName).replace('^', '_')}_{index:04d}.dcm"
        ds.save_as(folder / name, write_like_original=False)
        rows.append(f"{name},{int(positive)}")
        positives += positive
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return ExportSummary(folder, n, positives, min(burned_in, n))


def write_federation(out: Path, *, hospitals: int = 3, per_hospital: int = 60, size: int = 64, seed: int = 0,
                     burned_in: int = 1) -> list[ExportSummary]:
    """One folder per hospital; class balance differs between hospitals (35 %, 45 %, 55 % ...)."""
    return [write_hospital(out / f"hospital_{h}", n=per_hospital, seed=seed + h, size=size,
                           positive_share=0.35 + 0.1 * h, burned_in=burned_in, hospital=HOSPITALS[h % len(HOSPITALS)])
            for h in range(hospitals)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write demo hospital DICOM exports (identifiers included).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--per-hospital", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for summary in write_federation(args.out, hospitals=args.hospitals, per_hospital=args.per_hospital,
                                    size=args.size, seed=args.seed):
        print(f"{summary.folder}: {summary.instances} instances, {summary.positives} positive, "
              f"{summary.burned_in} with burned-in annotation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
