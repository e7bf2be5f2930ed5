"""Applies the PS3.15 Annex E Basic Profile (with the policy's retain-options) to a dataset.

UIDs become `2.25.<decimal of a keyed HMAC>`: the same original UID always maps to the same
replacement inside this silo (so series and references stay linked), and without the silo's
secret nobody can map back or link across silos. Private attributes, curves and overlay
data/comments are removed. The result records PatientIdentityRemoved = YES and the method
codes (113100 plus one per retain-option) as Annex E requires.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from pydicom.datadict import dictionary_has_tag, keyword_for_tag, repeater_has_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from silo_node.datasets.errors import MalformedInput, tag_text
from silo_node.deid.annex_e_table import (
    BASIC_PROFILE, DEVICE_IDENTITY, INSTITUTION_IDENTITY, METHOD_CODES, PATIENT_CHARACTERISTICS, tags_of,
)
from silo_node.deid.generalise import patient_shift_days

_TEXT_DUMMY = "ANONYMIZED"
_DUMMY: dict[str, Any] = {
    **{vr: _TEXT_DUMMY for vr in ("PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE")},
    "UR": "urn:anonymized", "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y",
    "IS": "0", "DS": "0", **{vr: 0 for vr in ("US", "SS", "UL", "SL", "UV", "SV", "AT")},
    "FL": 0.0, "FD": 0.0, **{vr: b"\x00\x00" for vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN")},
}
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_META_REMOVE = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
# Dates and times the longitudinal options of Table E.1-1 do not retain or modify: the
# patient's birth date and time are an identifier (HIPAA Safe Harbor: all elements of dates
# except the year), not the timing of the study, and keep their Basic Profile action.
_NOT_LONGITUDINAL = frozenset({0x00100030, 0x00100032})  # PatientBirthDate, PatientBirthTime
UID_ROOT = "2.25."
_STANDARD_ROOT = "1.2.840.10008."
# value representations that can carry free text, dates or nested attributes
_FREE_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "DA", "DT", "TM", "AS", "SQ", "OB", "OW", "UN"})
# UI attributes that name a kind of thing (a class, a syntax, a coding scheme), not an instance
_KIND_UID_PARTS = ("SOPClass", "TransferSyntax", "CodingScheme", "ContextGroupExtensionCreator", "ContextUID",
                   "CreatorVersion", "MappingResource", "SegmentationTemplate")


def _names_a_kind(keyword: str) -> bool:
    return any(part in keyword for part in _KIND_UID_PARTS)


class DicomDeidentifier:
    """One per registration; `touched` accumulates which attributes were acted on (tag ->
    action), for the ingestion report."""

    def __init__(self, secret: bytes, retain: Iterable[str] = ()) -> None:
        self._secret = secret
        self.retain = frozenset(retain)
        keep: set[int] = set()
        for option, keywords in (("patient_characteristics", PATIENT_CHARACTERISTICS),
                                 ("device_identity", DEVICE_IDENTITY),
                                 ("institution_identity", INSTITUTION_IDENTITY)):
            if option in self.retain:
                keep |= tags_of(keywords)
        self._keep = frozenset(keep)
        self.touched: dict[int, str] = {}

    def replace_uid(self, uid: str) -> str:
        digest = hmac.new(self._secret, b"uid\x00" + uid.strip().encode("ascii", "replace"), hashlib.sha256).digest()
        return UID_ROOT + str(int.from_bytes(digest[:16], "big"))

    def deidentify(self, ds: Dataset, *, file: str) -> None:
        """Modifies `ds` in place. Raises MalformedInput naming the tag whose value cannot
        be read (a truncated or corrupt element)."""
        patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
        shift = patient_shift_days(self._secret, patient) if "longitudinal_modified_dates" in self.retain else 0
        self._clean(ds, shift, file)
        # The 128-byte preamble is free for applications (TIFF/DICOM dual files, some PACS
        # exports put the patient there) and pydicom writes back what it read: zero it.
        ds.preamble = b"\0" * 128
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for tag in _META_REMOVE:
                if tag in meta:
                    del meta[tag]
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            elif "MediaStorageSOPInstanceUID" in meta:
                # An instance that names its UID only in its file meta: that original UID is
                # replaced too, and the dataset carries the replacement (DICOM wants both equal).
                replaced = self.replace_uid(str(meta.MediaStorageSOPInstanceUID))
                meta.MediaStorageSOPInstanceUID = replaced
                ds.SOPInstanceUID = replaced
        self._mark(ds)

    # -- internals ------------------------------------------------------------------------
    def _clean(self, ds: Dataset, shift: int, file: str) -> None:
        for tag in list(ds.keys()):
            try:
                element = ds[tag]
                vr = element.VR.split(" ")[0]
                value = element.value
            except Exception as error:  # any decoding failure of one element: name it, refuse the file
                raise MalformedInput(f"element cannot be read ({type(error).__name__})", file=file,
                                     tag=tag_text(tag), code="MALFORMED_DICOM") from None
            action = self._action(BaseTag(tag), vr)
            if action is None:
                if vr == "SQ" and value is not None:
                    for item in value:
                        self._clean(item, shift, file)
                continue
            self.touched[int(tag)] = action
            self._apply(ds, BaseTag(tag), vr, value, action, shift, file)

    def _action(self, tag: BaseTag, vr: str) -> str | None:
        if tag.is_private:
            return "X"
        if (0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF) and tag.group % 2 == 0:
            # curve data; overlays whole (the profile removes their data and comments, and an
            # overlay's description and label are free text with nothing left to describe)
            return "X"
        if vr == "UN" or not (dictionary_has_tag(tag) or repeater_has_tag(int(tag))):
            # A public attribute this silo cannot name (newer than its dictionary, e.g. the
            # 2025 person-name-to-use and pronoun attributes of (0010,0011)-(0010,0016), or made
            # up) may hold anything: the profile's table cannot say it is safe, so it is removed.
            return "X"
        action = BASIC_PROFILE.get(int(tag))
        if action is None and tag.group == 0x0010 and vr in _FREE_VRS and int(tag) not in self._keep:
            # the patient's group: text, dates or sequences the table does not list (a birth
            # date in an alternative calendar, an issuer's qualifiers) are not kept; coded and
            # numeric attributes (AnatomicalOrientationType, PatientBodyMassIndex) are
            return "X"
        if vr == "UI" and "uids" in self.retain:
            return None
        if action is None and vr == "UI" and not _names_a_kind(keyword_for_tag(tag)):
            # an instance UID the table does not list (MultiFrameSourceSOPInstanceUID,
            # SOPInstanceUIDOfConcatenationSource, frame-of-reference UIDs, ...) links the copy
            # back to the original in the PACS as surely as the SOP Instance UID does
            return "U"
        if action is None or int(tag) in self._keep:
            return None
        if vr in _DATE_VRS and int(tag) not in _NOT_LONGITUDINAL:
            if "longitudinal_full_dates" in self.retain:
                return None
            if "longitudinal_modified_dates" in self.retain:
                return "K" if vr == "TM" else "shift"
        return action

    def _apply(self, ds: Dataset, tag: BaseTag, vr: str, value: Any, action: str, shift: int, file: str) -> None:
        if action == "K":
            return
        if action == "shift":
            shifted = _shift(value, shift)
            if shifted is None:
                del ds[tag]
            else:
                ds[tag].value = shifted
            return
        if vr == "UN" or action in ("X", "X/Z", "X/D", "X/Z/D"):
            del ds[tag]
        elif action == "X/Z/U*":
            if vr == "SQ" and value is not None:
                for item in value:
                    self._clean(item, shift, file)
            else:
                del ds[tag]
        elif action in ("Z", "Z/D"):
            ds[tag].value = Sequence([]) if vr == "SQ" else None
        elif action == "U" or vr == "UI":
            if vr != "UI":
                del ds[tag]
            elif value:
                uids = value if isinstance(value, list) or hasattr(value, "__iter__") and not isinstance(value, str) else [value]
                # a well-known UID of the standard (a class, a syntax, a palette) identifies no one
                replaced = [str(u) if str(u).startswith(_STANDARD_ROOT) else self.replace_uid(str(u)) for u in uids]
                ds[tag].value = replaced if len(replaced) > 1 else replaced[0]
        elif vr == "SQ":  # D on a sequence: an empty sequence keeps nothing of the original
            ds[tag].value = Sequence([])
        else:
            ds[tag].value = _DUMMY.get(vr, _TEXT_DUMMY)

    def _mark(self, ds: Dataset) -> None:
        ds.PatientIdentityRemoved = "YES"
        options = sorted(self.retain)
        ds.DeidentificationMethod = ("HealthFed PS3.15 Annex E Basic Profile" + "".join(f"; {o}" for o in options))[:64]
        items = []
        for key in ["basic", *options]:
            code, meaning = METHOD_CODES[key]
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if "longitudinal_full_dates" in self.retain:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif "longitudinal_modified_dates" in self.retain:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


def _shift(value: Any, days: int) -> Any:
    """Shifts a DA or DT value (or several) by `days`; None when a value is not a date."""
    values = list(value) if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str)) else [value]
    shifted: list[str] = []
    for item in values:
        text = str(item).strip()
        if not text:
            shifted.append(text)
            continue
        try:
            moved = date(int(text[0:4]), int(text[4:6]), int(text[6:8])) + timedelta(days=days)
        except ValueError:
            return None
        shifted.append(moved.strftime("%Y%m%d") + text[8:])
    return shifted if len(shifted) > 1 else shifted[0]
