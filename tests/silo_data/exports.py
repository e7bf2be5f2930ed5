"""Builders for realistic hospital exports used by the tests (files written to tmp dirs)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIRST = ["John", "Maria", "Wei", "Fatima", "Olga", "Kwame", "Sofia", "Raj", "Lena", "Pedro"]
LAST = ["Smith", "Garcia", "Zhang", "Okafor", "Ivanova", "Mensah", "Rossi", "Patel", "Berg", "Silva"]

# One column per Safe Harbor kind (plus the age rule), named as hospital exports name them.
IDENTIFIER_COLUMNS = {
    "patient_name": "name",
    "street_address": "geographic",
    "zip": "geographic",
    "birth_date": "date",
    "admission_date": "date",
    "age": "age_over_89",
    "phone": "phone",
    "fax_number": "fax",
    "email": "email",
    "ssn": "ssn",
    "mrn": "mrn",
    "insurance_member_id": "health_plan",
    "account_number": "account",
    "license_number": "license",
    "vehicle_vin": "vehicle",
    "device_serial": "device",
    "homepage_url": "url",
    "ip_address": "ip",
    "fingerprint_template": "biometric",
    "photo": "photo",
    "record_id": "other_unique_id",
}


def identifier_frame(n: int = 40, seed: int = 7) -> pd.DataFrame:
    """A table carrying every HIPAA Safe Harbor identifier kind next to clinical columns."""
    rng = np.random.default_rng(seed)
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 24, dtype=np.uint8))).decode()
    rows = []
    for i in range(n):
        first, last = FIRST[i % 10], LAST[(i * 3) % 10]
        rows.append({
            "patient_name": f"{first} {last}{'son' * (i // 10)}",
            "street_address": f"{100 + i} Elm Street",
            "zip": ["02139", "03601", "10027", "89301", "60614"][i % 5],
            "birth_date": f"19{40 + i % 50}-0{1 + i % 9}-1{i % 10}",
            "admission_date": f"2021-0{1 + i % 9}-2{i % 8}",
            "age": str(50 + (i * 7) % 50),
            "phone": f"(617) 555-{1000 + i:04d}",
            "fax_number": f"617-555-{2000 + i:04d}",
            "email": f"{first.lower()}.{last.lower()}{i}@example.org",
            "ssn": f"{123 + i:03d}-45-{6700 + i:04d}",
            "mrn": f"MRN{900000 + i}",
            "insurance_member_id": f"HP{77000 + i}X",
            "account_number": f"ACC-{55000 + i}",
            "license_number": f"D{1234500 + i}",
            "vehicle_vin": f"1HGCM82633A{100000 + i}",
            "device_serial": f"SN-PM-{880000 + i}",
            "homepage_url": f"https://people.example.org/~{last.lower()}{i}",
            "ip_address": f"10.0.{i // 200}.{i % 200 + 1}",
            "fingerprint_template": f"{(i * 2654435761) % (1 << 64):016x}",
            "photo": f"data:image/png;base64,{png}{i}",
            "record_id": f"R{31337 + i * 17}",
            "bmi": f"{20 + rng.normal(5, 3):.1f}",
            "sex": "F" if i % 2 else "M",
            "outcome": str(int(i % 3 == 0)),
        })
    return pd.DataFrame(rows)


IDENTIFIER_POLICY = {
    "features": {
        "bmi": {"transforms": ["standardize", "identity"], "bounds": [10, 80]},
        "sex": {"transforms": ["one_hot"], "categories": ["F", "M"]},
        "age": {"transforms": ["standardize", "identity"]},
        "birth_date": {"transforms": ["year", "standardize"]},
        "admission_date": {"transforms": ["year"]},
        "zip": {"transforms": ["one_hot"]},
    },
    "label": "outcome",
    "patient_key": "mrn",
    "identifiers": {
        **{column: "drop" for column in IDENTIFIER_COLUMNS},
        "zip": "zip3",
        "birth_date": "year",
        "admission_date": "shift_days",
        "age": "age_90",
    },
}


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


HEART_COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
                 "oldpeak", "slope", "ca", "thal", "num"]
HEART_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "fed_heart_disease"

HEART_POLICY = {
    "features": {
        # Public clinical ranges (not derived from the records) for DP plans' bounded scaling.
        **{c: {"transforms": ["standardize", "identity"], "bounds": b} for c, b in
           [("age", [0, 100]), ("trestbps", [80, 220]), ("chol", [100, 600]), ("thalach", [60, 220]),
            ("oldpeak", [-3, 7])]},
        **{c: {"transforms": ["identity", "standardize"], "bounds": [0, 1]} for c in ["sex", "fbs", "exang"]},
        "cp": {"transforms": ["one_hot", "identity"], "categories": ["1", "2", "3", "4"]},
        "restecg": {"transforms": ["one_hot"], "categories": ["0", "1", "2"]},
    },
    "label": "num",
}


def heart_csv(hospital: str, path: Path) -> Path:
    """A UCI hospital file, given a header row as a hospital export would have. The files are
    the project's shared benchmark data, read in place from ../shared (never shipped in the
    repository): a checkout without them skips these tests and says why."""
    source = HEART_DIR / f"processed.{hospital}.data"
    if not source.is_file():
        pytest.skip(f"shared Fed-Heart-Disease data not found at {source} (clone next to ../shared to run this test)")
    body = source.read_text()
    path.write_text(",".join(HEART_COLUMNS) + "\n" + body)
    return path
