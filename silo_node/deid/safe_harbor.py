"""Detection of the 18 HIPAA Safe Harbor identifier kinds in a table.

45 CFR 164.514(b)(2)(i) lists (A) names, (B) sub-state geography, (C) dates other than year
and ages over 89, (D) telephone and (E) fax numbers, (F) e-mail, (G) SSN, (H) medical record
numbers, (I) health-plan beneficiary and (J) account numbers, (K) certificate/licence,
(L) vehicle and (M) device identifiers, (N) URLs, (O) IP addresses, (P) biometric ids,
(Q) full-face photographs and (R) any other unique identifying number or code.

A column is flagged by its name (normalised tokens) or by its content (patterns over every
value). Detection errs on the side of flagging: a false alarm costs the data steward one
policy line, a miss leaks a patient. Findings never carry cell values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
from typing import Any

KINDS: tuple[str, ...] = (
    "name", "geographic", "date", "age_over_89", "phone", "fax", "email", "ssn", "mrn",
    "health_plan", "account", "license", "vehicle", "device", "url", "ip", "biometric",
    "photo", "other_unique_id",
)


@dataclass(frozen=True)
class Finding:
    column: str
    kind: str
    how: str  # "name" or "content"


def name_tokens(column: str) -> list[str]:
    """`PatientFirstName` / `patient-first name` -> ['patient', 'first', 'name']."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column.strip())
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


# Token sets, or joined-token regexes, per kind; checked in this order (first hit wins).
_NAME_RULES: tuple[tuple[str, str], ...] = (
    ("ssn", r"(^|_)(ssn|social_security(_number)?|social_sec_no|sin)($|_)"),
    ("email", r"(^|_)(e_?mail|email_address|mail)($|_)"),
    ("fax", r"(^|_)fax($|_)"),
    ("phone", r"(^|_)(phone|telephone|tel|mobile|cell|cellphone|pager)($|_)"),
    ("url", r"(^|_)(url|uri|website|web_?site|homepage|web_address|link)($|_)"),
    ("ip", r"(^|_)(ip|ip_?address|ipv4|ipv6|ip_addr)($|_)"),
    ("biometric", r"(^|_)(fingerprint|finger_print|voiceprint|voice_print|biometric\w*|retina\w*|iris_scan|palm_print|face_template)($|_)"),
    ("photo", r"(^|_)(photo\w*|picture|headshot|portrait|face_image|face|selfie)($|_)"),
    ("mrn", r"(^|_)(mrn|medical_record(_number|_no|_num)?|chart_(number|no)|hospital_(number|no|id)|patient_(id|number|no)|pid)($|_)"),
    ("health_plan", r"(^|_)(health_plan\w*|insurance\w*|insurer_id|member_(id|number)|beneficiary\w*|medicaid\w*|medicare\w*|policy_(number|no)|subscriber_id|payer_id)($|_)"),
    ("account", r"(^|_)(account\w*|acct\w*|billing_(number|no|id)|iban|bank_\w+)($|_)"),
    ("vehicle", r"(^|_)(vehicle\w*|vin|license_plate|licence_plate|plate_(number|no)|car_reg\w*)($|_)"),
    ("license", r"(^|_)(licen[cs]e\w*|certificate\w*|dea_(number|no)|passport\w*|driver_?s?_licen[cs]e)($|_)"),
    ("device", r"(^|_)(device_(id|serial|number|no|identifier)|serial(_number|_no)?|imei|udi|mac_address|implant_(id|serial))($|_)"),
    ("date", r"(^|_)(date\w*|dob|birth\w*|born|dod|death\w*|deceased|admit\w*|admission\w*|discharg\w*|datetime|timestamp|visit_(date|time)|\w+_dt|dt)($|_)"),
    ("geographic", r"(^|_)(address\w*|addr|street\w*|city|town|county|zip\w*|postcode|postal\w*|post_code|precinct|latitude|longitude|lat|lon|lng|gps\w*|geo\w*|neighbou?rhood|district|suburb|ward)($|_)"),
    ("name", r"(^|_)(name|names|surname|forename|firstname|lastname|fullname|given|family|maiden|initials|nickname|first_name|last_name|middle_name|full_name|given_name|family_name|maiden_name)($|_)"),
    ("other_unique_id", r"(^|_)(id|uid|uuid|guid|identifier|encounter|visit_id|case_(id|number)|record_id|key)($|_)"),
)
_AGE = re.compile(r"(^|_)age(_years|_yrs|_at_\w+)?$|^(years|yrs|years_old)$")  # not pack_years

# Patterns searched anywhere in a value (strong signals, even inside free text).
_SEARCH: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ssn", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("email", re.compile(r"[\w.+-]+@[\w-]+\.[A-Za-z]{2,}")),
    ("url", re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S+")),
    ("ip", re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")),
    ("ip", re.compile(r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,6}:[0-9a-f]{0,4}\b")),
    ("phone", re.compile(r"(?:\+\d{1,3}[-. ]?)?\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b")),
    ("mrn", re.compile(r"(?i)\bMRN[-:#]?\s?\d{3,}\b")),
    ("photo", re.compile(r"^(?:data:image/|/9j/|iVBORw0KGgo)")),
)
# Patterns that must match most values of a column in full (weaker signals).
_MOSTLY: tuple[tuple[str, re.Pattern[str], float], ...] = (
    ("date", re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?Z?|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{4}|\d{1,2}[- ][A-Za-z]{3}[- ]\d{2,4}"
                        # compact forms: 20230115 and 15JAN2023 (not 20230115.0: generalisation cannot read it)
                        r"|(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|\d{1,2}[A-Za-z]{3}\d{2,4}"), 0.5),
    ("geographic", re.compile(r"\d{5}(?:-\d{4})?"), 0.9),
    ("vehicle", re.compile(r"(?=.*\d)(?=.*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}"), 0.9),
    ("name", re.compile(r"[A-Z][a-z'\-]+(?:,? (?:[A-Z]\.|[A-Z][a-z'\-]+))+|[A-Z][A-Za-z'\-]+\^[A-Z][A-Za-z'\-]+(?:\^.*)?"
                        r"|[A-Z][A-Z'\-]+, ?[A-Z][A-Z'\-]+(?: [A-Z]\.?)?"), 0.8),  # SMITH, JOHN
)
_UNIQUE_CODE = re.compile(r"(?=.*\d)[A-Za-z0-9][A-Za-z0-9\-_/.:]{5,}")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


_NAME_VALUE = next(pattern for kind, pattern, _ in _MOSTLY if kind == "name")


def looks_like_a_name(value: str) -> bool:
    """Whether one value has the shape of a person's name ("Anna Kowalski", "SMITH, JOHN",
    "Smith^John"): such a value is never written into a policy, which leaves the silo."""
    return bool(_NAME_VALUE.fullmatch(value.strip()))


def detect_by_name(column: str) -> str | None:
    """The identifier kind a column's name suggests, or None."""
    joined = "_".join(name_tokens(column))
    for kind, pattern in _NAME_RULES:
        if re.search(pattern, joined):
            return kind
    return None


def is_age_column(column: str) -> bool:
    return bool(_AGE.search("_".join(name_tokens(column))))


def detect_by_content(values: pd.Series[Any]) -> str | None:
    """The identifier kind a column's non-missing values reveal, or None. `values` holds
    the cells as read (strings for CSV; any Arrow-backed type for Parquet)."""
    present = values.dropna()
    if present.empty:
        return None
    if present.map(lambda v: isinstance(v, (bytes, bytearray))).any():
        if present.map(lambda v: isinstance(v, (bytes, bytearray)) and bytes(v[:4]).startswith(_IMAGE_MAGIC)).any():
            return "photo"
        present = present.map(lambda v: v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v)
    if pd.api.types.is_datetime64_any_dtype(present):
        return "date"
    text = present.astype(str).str.strip()
    text = text[text != ""]
    if text.empty:
        return None
    for kind, pattern in _SEARCH:
        if text.str.contains(pattern).any():  # type: ignore[arg-type]  # pandas takes compiled patterns; its 2.0 stubs do not
            return kind
    for kind, pattern, share in _MOSTLY:
        matched = text.str.fullmatch(pattern)  # type: ignore[arg-type]  # (compiled pattern, as above)
        # names: only where most rows differ, since title-case categories ("Internal Medicine")
        # have the same shape; a names column repeated on each encounter row is then missed by
        # content (not covered, README), and policy-template still never lists such values
        if matched.mean() >= share and (kind != "name" or text.nunique() >= max(5, 0.5 * len(text))):
            return kind
    if len(text) >= 10 and text.is_unique and text.str.fullmatch(_UNIQUE_CODE).all():  # type: ignore[arg-type]
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.isna().any() or (numeric.round() == numeric).all():
            return "other_unique_id"
    return None


def detect(frame: pd.DataFrame) -> list[Finding]:
    """Every column that carries (or may carry) a Safe Harbor identifier."""
    findings: list[Finding] = []
    for column in frame.columns:
        by_name = detect_by_name(str(column))
        if by_name is not None:
            findings.append(Finding(str(column), by_name, "name"))
            continue
        if is_age_column(str(column)):
            ages = pd.to_numeric(frame[column], errors="coerce")
            unparsed = frame[column].notna() & ages.isna()
            if (ages > 89).any() or unparsed.any():
                findings.append(Finding(str(column), "age_over_89", "content"))
            continue
        by_content = detect_by_content(frame[column])
        if by_content is not None:
            findings.append(Finding(str(column), by_content, "content"))
    return findings
