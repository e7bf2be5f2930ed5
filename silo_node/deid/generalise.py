"""Safe Harbor generalisations applied to one column at ingestion.

Each function returns a new Series and raises `MalformedInput` (naming the file, row and
column, never the value) for a cell it cannot interpret: an uninterpretable cell in an
identifier column cannot be proven safe, so the export is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import numpy as np
import pandas as pd

from silo_node.datasets.errors import MalformedInput
from typing import Any

# Three-digit ZIP areas with 20,000 or fewer people (HHS Safe Harbor guidance, 2000 census):
# they must be reported as 000.
RESTRICTED_ZIP3: frozenset[str] = frozenset(
    {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831",
     "878", "879", "884", "890", "893"}
)
SHIFT_RANGE_DAYS = 365


class CellLocator:
    """Turns a position in the frame into the file/row words of an error message."""

    def __init__(self, file: str, row_numbers: Sequence[int] | None) -> None:
        self.file = file
        self.row_numbers = row_numbers

    def error(self, problem: str, column: str, position: int, code: str) -> MalformedInput:
        row = self.row_numbers[position] if self.row_numbers is not None else position + 1
        return MalformedInput(problem, file=self.file, row=row, column=column, code=code)


def _first_bad(mask: pd.Series[Any]) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0])


def parse_dates(values: pd.Series[Any], column: str, where: CellLocator) -> pd.Series[Any]:
    """Cells to timestamps; a present but unparseable cell is an error."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.astype("string").str.strip()
    parsed = pd.to_datetime(text, errors="coerce", format="mixed", dayfirst=False)
    bad = text.notna() & (text != "") & parsed.isna()
    if bad.any():
        raise where.error("not a date", column, _first_bad(bad), "MALFORMED_TYPE")
    return parsed


def to_year(values: pd.Series[Any], column: str, where: CellLocator) -> pd.Series[Any]:
    """Dates -> their year as text ('1957'); missing stays missing."""
    years = parse_dates(values, column, where).dt.year
    return years.map(lambda y: None if pd.isna(y) else str(int(y))).astype("string")


def patient_shift_days(secret: bytes, patient: str) -> int:
    """A per-patient offset in [-365, 365] \\ {0} from a keyed HMAC, so that every date of
    one patient moves together (intervals survive) and nobody without the silo's secret can
    undo it."""
    digest = hmac.new(secret, b"date-shift\x00" + patient.encode("utf-8"), hashlib.sha256).digest()
    offset = int.from_bytes(digest[:8], "big") % (2 * SHIFT_RANGE_DAYS) - SHIFT_RANGE_DAYS
    return offset if offset != 0 else SHIFT_RANGE_DAYS


def shift_dates(
    values: pd.Series[Any], patients: pd.Series[Any], secret: bytes, column: str, where: CellLocator
) -> pd.Series[Any]:
    """Dates -> ISO dates shifted by the patient's offset (time of day removed)."""
    parsed = parse_dates(values, column, where)
    missing_patient = parsed.notna() & patients.isna()
    if missing_patient.any():
        raise where.error("date without a patient key to shift it by", column, _first_bad(missing_patient), "MALFORMED_TYPE")
    offsets = patients.map(lambda p: None if pd.isna(p) else patient_shift_days(secret, str(p)))
    shifted = parsed.dt.normalize() + pd.to_timedelta(offsets.astype("float64"), unit="D")
    return shifted.map(lambda t: None if pd.isna(t) else t.strftime("%Y-%m-%d")).astype("string")


def cap_age(values: pd.Series[Any], column: str, where: CellLocator) -> pd.Series[Any]:
    """Ages -> numbers with everything above 89 reported as 90 ('90+' and '>89' accepted)."""
    text = values.astype("string").str.strip().str.replace(r"^(?:>\s*89|9\d\+|\d{3,}\+|90\+)$", "90", regex=True)
    ages = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & (text != "") & ages.isna()
    if bad.any():
        raise where.error("not an age in years", column, _first_bad(bad), "MALFORMED_TYPE")
    if (ages < 0).any():
        raise where.error("negative age", column, _first_bad(ages < 0), "MALFORMED_TYPE")
    return ages.clip(upper=90).astype("float64")


def zip3(values: pd.Series[Any], column: str, where: CellLocator) -> pd.Series[Any]:
    """US ZIP (5 or 9 digits, leading zeros kept as text) -> first three digits, or 000 for
    the restricted areas."""
    text = values.astype("string").str.strip()
    as_number = text.str.fullmatch(r"\d{3,4}(?:\.0)?")
    text = text.where(~as_number.fillna(False), text.str.replace(r"\.0$", "", regex=True).str.zfill(5))
    ok = text.str.fullmatch(r"\d{5}(?:-?\d{4})?")
    bad = text.notna() & (text != "") & ~ok.fillna(False)
    if bad.any():
        raise where.error("not a US ZIP code", column, _first_bad(bad), "MALFORMED_TYPE")
    prefix = text.str.slice(0, 3)
    return prefix.where(~prefix.isin(RESTRICTED_ZIP3), "000")
