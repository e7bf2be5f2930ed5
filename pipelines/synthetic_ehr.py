"""Synthetic tabular EHR exports for demo hospitals: realistic column names and identifier
columns (which the silo's de-identification layer must remove), different sizes and case
mix per hospital, and a label that depends on the clinical features in a known way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FIRST = ["Maria", "James", "Aisha", "Chen", "Olga", "Pedro", "Fatima", "John", "Yuki", "Emma", "Kwame", "Sofia"]
LAST = ["Garcia", "Smith", "Okafor", "Wang", "Ivanova", "Silva", "Khan", "Brown", "Sato", "Jones", "Mensah", "Rossi"]
STREETS = ["Oak St", "Maple Ave", "Pine Rd", "Cedar Ln", "Elm St", "Birch Way"]


@dataclass(frozen=True)
class HospitalProfile:
    silo_id: str
    name: str
    patients: int
    mean_age: float
    smoker_rate: float
    diabetes_rate: float
    zip_prefix: str


DEMO_HOSPITALS = (
    HospitalProfile("st-marys", "St Mary's Teaching Hospital", 900, 58.0, 0.22, 0.14, "021"),
    HospitalProfile("riverside", "Riverside General", 500, 66.0, 0.30, 0.22, "606"),
    HospitalProfile("hillcrest", "Hillcrest Community Clinic", 220, 49.0, 0.15, 0.09, "946"),
)

CLINICAL_FEATURES = ("age", "sex", "bmi", "systolic_bp", "cholesterol", "hba1c", "smoker", "diabetes", "chest_pain_type")
LABEL = "cardiac_event_1y"


def generate_export(profile: HospitalProfile, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = profile.patients
    age = np.clip(rng.normal(profile.mean_age, 13, n), 18, 97).round().astype(int)
    sex = rng.choice(["F", "M"], n)
    bmi = np.clip(rng.normal(27.5, 5, n), 16, 55).round(1)
    systolic = np.clip(rng.normal(122 + 0.45 * (age - 50), 16, n), 85, 220).round().astype(int)
    cholesterol = np.clip(rng.normal(200 + 0.4 * (age - 50), 38, n), 110, 380).round().astype(int)
    diabetes = (rng.random(n) < profile.diabetes_rate).astype(int)
    hba1c = np.where(diabetes == 1, rng.normal(7.8, 1.1, n), rng.normal(5.4, 0.4, n)).round(1)
    smoker = (rng.random(n) < profile.smoker_rate).astype(int)
    chest_pain = rng.choice(["typical", "atypical", "non_anginal", "asymptomatic"], n, p=[0.2, 0.25, 0.3, 0.25])
    logit = (
        -3.1 + 0.055 * (age - 55) + 0.45 * (sex == "M") + 0.04 * (bmi - 27) + 0.022 * (systolic - 125)
        + 0.008 * (cholesterol - 200) + 0.7 * diabetes + 0.8 * smoker + 1.3 * (chest_pain == "typical")
        + 0.6 * (chest_pain == "atypical")
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    birth_year = 2026 - age
    dob = [f"{y}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}" for y in birth_year]
    admission = [f"2025-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}" for _ in range(n)]
    return pd.DataFrame(
        {
            "patient_name": [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(n)],
            "mrn": [f"MRN{profile.zip_prefix}{i:07d}" for i in rng.permutation(n) + 1000],
            "date_of_birth": dob,
            "admission_date": admission,
            "street_address": [f"{rng.integers(1, 999)} {rng.choice(STREETS)}" for _ in range(n)],
            "zip_code": [f"{profile.zip_prefix}{rng.integers(0, 100):02d}" for _ in range(n)],
            "phone": [f"({rng.integers(200, 999)}) {rng.integers(200, 999)}-{rng.integers(0, 10000):04d}" for _ in range(n)],
            "email": [f"patient{i}@mail.example.com" for i in rng.integers(10_000, 99_999, n)],
            "age": age,
            "sex": sex,
            "bmi": bmi,
            "systolic_bp": systolic,
            "cholesterol": cholesterol,
            "hba1c": hba1c,
            "smoker": smoker,
            "diabetes": diabetes,
            "chest_pain_type": chest_pain,
            LABEL: label,
        }
    )


def write_demo_exports(out_dir: Path, seed: int = 7) -> dict[str, Path]:
    """One CSV export per demo hospital, as a hospital's EHR reporting tool would write it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for index, profile in enumerate(DEMO_HOSPITALS):
        path = out_dir / f"{profile.silo_id}-ehr-export.csv"
        generate_export(profile, seed + index).to_csv(path, index=False)
        paths[profile.silo_id] = path
    return paths
