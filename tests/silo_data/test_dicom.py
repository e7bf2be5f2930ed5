"""DICOM ingestion: pydicom's own test files are each ingested or rejected with a specific
reason, the Annex E Basic Profile holds attribute by attribute, UIDs are replaced
consistently, burned-in annotation is quarantined and batches are all or nothing."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from silo_node.datasets.errors import DataLayerError, MalformedInput
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry
from silo_node.deid.annex_e_table import BASIC_PROFILE
from silo_node.deid.dicom_deid import DicomDeidentifier

from .plans import make_plan

REASONS = {"NO_PIXEL_DATA", "NOT_DICOM", "PIXEL_DATA_UNDECODABLE", "DICOMDIR", "MULTI_FRAME",
           "PHOTOMETRIC_UNSUPPORTED", "MALFORMED_TRUNCATED", "MALFORMED_DICOM"}
SECRET = b"s" * 32


def _folder(tmp_path: Path, files: list[Path], labels: list[str] | None = None, name: str = "in") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    rows = ["file,label"]
    for index, source in enumerate(files):
        target = f"{index:03d}_{source.name}"
        shutil.copy(source, folder / target)
        rows.append(f"{target},{(labels or ['1'])[index % len(labels or ['1'])]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def _stored(state_dir: Path, name: str) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted((state_dir / "datasets" / name / "instances").glob("*.dcm"))]


def _testdata() -> list[Path]:
    return sorted(p for p in map(Path, get_testdata_files()) if p.is_file())


def test_every_pydicom_test_file_is_ingested_or_rejected_with_a_reason(registry: DatasetRegistry, tmp_path: Path) -> None:
    outcomes: dict[str, str] = {}
    for index, source in enumerate(_testdata()):
        folder = _folder(tmp_path, [source], name=f"f{index}")
        try:
            report = registry.add(f"d{index}", folder, "dicom", None)
            outcomes[source.name] = "ingested" if report.instances == {"ingested": 1} else str(report.instances)
        except DataLayerError as error:  # anything else is a crash and fails the test
            assert error.code in REASONS, (source.name, error.code)
            assert str(folder) in str(error)
            outcomes[source.name] = error.code
    assert sum(v == "ingested" for v in outcomes.values()) >= 60
    assert outcomes["CT_small.dcm"] == "ingested" and outcomes["MR_small.dcm"] == "ingested"
    assert outcomes["rtplan.dcm"] == "NO_PIXEL_DATA"
    assert outcomes["MR_truncated.dcm"] == "MALFORMED_TRUNCATED"
    assert outcomes["rtdose.dcm"] == "MULTI_FRAME"
    assert outcomes["README.txt"] == "NOT_DICOM"


def test_a_rejected_batch_leaves_nothing_and_skip_mode_reports_reasons(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path
) -> None:
    files = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "MR_truncated.dcm")]
    folder = _folder(tmp_path, files)
    with pytest.raises(DataLayerError) as caught:
        registry.add("batch", folder, "dicom", None)
    assert caught.value.code == "NO_PIXEL_DATA" and "2 of 4 files unusable" in str(caught.value)
    assert registry.list() == []
    assert [p.name for p in (state_dir / "datasets").iterdir()] == ["deid-secret.key"]
    policy = DatasetPolicy.from_document({"features": {"image": {"transforms": ["identity"]}}, "label": "label",
                                          "dicom": {"on_reject": "skip"}})
    report = registry.add("batch", folder, "dicom", policy)
    assert report.instances == {"ingested": 2, "rejected: NO_PIXEL_DATA": 1, "rejected: MALFORMED_TRUNCATED": 1}


def test_truncated_dicom_names_file_and_tag(registry: DatasetRegistry, tmp_path: Path) -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "cut.dcm").write_bytes(data[: len(data) // 2])
    (folder / "labels.csv").write_text("file,label\ncut.dcm,1\n")
    with pytest.raises(MalformedInput) as caught:
        registry.add("cut", folder, "dicom", None)
    assert caught.value.tag == "(7FE0,0010)" and caught.value.file == str(folder / "cut.dcm")
    assert "(7FE0,0010)" in str(caught.value)


def _value_for(vr: str, tag: int) -> object:
    """A distinctive original value of the right VR for each profile attribute."""
    token = f"{tag:08X}"
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"Inner^{token}"
        item.ReferencedSOPInstanceUID = f"1.2.3.{tag}"
        return Sequence([item])
    return {
        "UI": f"1.2.826.0.1.{tag}", "DA": "20210314", "DT": "20210314101112", "TM": "101112", "AS": "047Y",
        "IS": "7", "DS": "7.5", "US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 7.5, "FD": 7.5, "AT": 0x00100010,
        "OB": b"ORIG" + token.encode(), "OW": b"ORIG" + token.encode(), "UN": b"ORIG" + token.encode(),
        "UR": f"http://orig/{token}", "CS": f"C{token}", "AE": f"AE{token}",
    }.get(vr, f"Original {token}")


def _profile_dataset() -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag in BASIC_PROFILE:
        try:
            vr = dictionary_VR(tag).split(" ")[0]
        except KeyError:
            continue
        ds.add_new(tag, vr, _value_for(vr, tag))
    ds.add_new(0x00091001, "LO", "private secret")
    ds.add_new(0x60003000, "OW", b"\x01\x02")
    return ds


def test_annex_e_attribute_by_attribute() -> None:
    original = _profile_dataset()
    ds = _profile_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DicomDeidentifier(SECRET).deidentify(ds, file="profile")
    checked = 0
    for tag, action in BASIC_PROFILE.items():
        if tag not in original:
            continue
        checked += 1
        before = original[tag]
        after = ds.get(tag)
        name = keyword_for_tag(tag) or f"{tag:08X}"
        if action in ("X", "X/Z", "X/D", "X/Z/D"):
            assert after is None, name
        elif action in ("Z", "Z/D"):
            assert after is None or after.is_empty or (after.VR == "SQ" and len(after.value) == 0), name
        elif action == "X/Z/U*":
            inner = after.value[0] if after is not None and len(after.value) else Dataset()
            assert inner.get("ReferencedSOPInstanceUID") != before.value[0].ReferencedSOPInstanceUID, name
            assert "Inner" not in str(inner.get("PatientName", "")), name
        else:  # D and U: replaced (or, for an undecodable UN value, removed), never the original
            assert after is None or after.value != before.value, name
            assert after is not None or before.VR == "UN", name
            if before.VR == "SQ":
                assert "Inner" not in str(after.value), name
    assert checked > 550
    assert 0x00091001 not in ds and 0x60003000 not in ds
    assert ds.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID != original.SOPInstanceUID


def test_retain_options() -> None:
    ds = _profile_dataset()
    options = ("patient_characteristics", "device_identity", "uids", "longitudinal_modified_dates")
    DicomDeidentifier(SECRET, options).deidentify(ds, file="x")
    original = _profile_dataset()
    assert ds.PatientSex == original.PatientSex and ds.PatientAge == original.PatientAge
    assert ds.DeviceSerialNumber == original.DeviceSerialNumber
    assert ds.StudyInstanceUID == original.StudyInstanceUID
    assert ds.StudyDate != original.StudyDate and len(ds.StudyDate) == 8  # shifted, not removed
    assert ds.InstitutionName != original.InstitutionName if "InstitutionName" in ds else True
    assert "PatientName" not in ds or not ds.PatientName
    codes = {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113108", "113109", "113110", "113107"}
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_replaced_consistently_within_the_silo(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    folder = _folder(tmp_path, [source, source], labels=["0", "1"])
    second = pydicom.dcmread(folder / "001_CT_small.dcm")
    second.SOPInstanceUID = second.SOPInstanceUID + ".2"
    second.save_as(folder / "001_CT_small.dcm")
    registry.add("ct", folder, "dicom", None)
    stored = _stored(state_dir, "ct")
    original = pydicom.dcmread(source)
    assert len(stored) == 2
    assert stored[0].StudyInstanceUID == stored[1].StudyInstanceUID != original.StudyInstanceUID
    assert stored[0].SOPInstanceUID != stored[1].SOPInstanceUID
    assert all(s.StudyInstanceUID.startswith("2.25.") for s in stored)
    assert DicomDeidentifier(SECRET).replace_uid("1.2.3") != DicomDeidentifier(b"t" * 32).replace_uid("1.2.3")
    for ds in stored:
        assert "PatientName" not in ds or not ds.PatientName
        assert not any(element.tag.is_private for element in ds)
        assert ds.PatientIdentityRemoved == "YES"
    blob = b"".join(p.read_bytes() for p in (state_dir / "datasets").rglob("*") if p.is_file())
    assert str(original.PatientName).encode() not in blob and original.StudyInstanceUID.encode() not in blob


def test_burned_in_annotation_is_quarantined(registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    folder = _folder(tmp_path, [source, Path(get_testdata_file("MR_small.dcm"))], labels=["0", "1"])
    burned = pydicom.dcmread(folder / "000_CT_small.dcm")
    burned.BurnedInAnnotation = "YES"
    burned.save_as(folder / "000_CT_small.dcm")
    report = registry.add("mixed", folder, "dicom", None)
    assert report.instances == {"ingested": 1, "quarantined: BURNED_IN_ANNOTATION": 1}
    assert len(_stored(state_dir, "mixed")) == 1
    assert "burned" not in str(report).lower() or "BURNED_IN_ANNOTATION" in str(report)


@pytest.mark.parametrize(("keyword", "value", "reason"), [
    ("RecognizableVisualFeatures", "YES", "RECOGNIZABLE_VISUAL_FEATURES"),
    ("BurnedInAnnotation", ["NO", "YES"], "BURNED_IN_ANNOTATION"),
])
def test_an_instance_that_may_show_a_face_or_a_name_is_quarantined(
        registry: DatasetRegistry, tmp_path: Path, state_dir: Path, keyword: str, value: object, reason: str) -> None:
    """Found by an attack review: only a single-valued BurnedInAnnotation YES was quarantined."""
    folder = _folder(tmp_path, [Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("MR_small.dcm"))],
                     labels=["0", "1"])
    flagged = pydicom.dcmread(folder / "000_CT_small.dcm")
    setattr(flagged, keyword, value)
    flagged.save_as(folder / "000_CT_small.dcm")
    report = registry.add("mixed", folder, "dicom", None)
    assert report.instances == {"ingested": 1, f"quarantined: {reason}": 1}
    assert len(_stored(state_dir, "mixed")) == 1


def test_image_view(registry: DatasetRegistry, tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm", "rtdose_1frame.dcm"]
    files = [Path(get_testdata_file(n)) for n in names] * 2
    folder = _folder(tmp_path, files, labels=["0", "1"])
    policy = DatasetPolicy.from_document({"features": {"image": {"transforms": ["identity"]}}, "label": "label",
                                          "dicom": {"on_reject": "skip", "image_size": 32}})
    report = registry.add("img", folder, "dicom", policy)
    plan = make_plan(model={"id": "small_cnn", "image_size": 16}, features=[{"name": "image", "transform": "identity"}],
                     label={"name": "label", "positive_values": ["1"]})
    train, test = registry.training_view("img", plan, "train"), registry.training_view("img", plan, "test")
    assert train.n + test.n == report.records_kept
    assert train.images.shape == (train.n, 16, 16, 1) and train.images.dtype == np.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert train.labels.shape == (train.n, 1)


def test_unlabelled_instances_and_a_file_given_as_folder_are_refused_by_code(
    registry: DatasetRegistry, tmp_path: Path
) -> None:
    """An instance the labels table does not name is NO_LABEL; skipping it leaves nothing
    usable (NO_USABLE_INSTANCES); a file where the folder belongs is MALFORMED_NOT_A_FOLDER.
    Nothing is registered in any case."""
    ct = Path(get_testdata_file("CT_small.dcm"))
    folder = _folder(tmp_path, [ct])
    (folder / "labels.csv").write_text("file,label\nsomeone-else.dcm,1\n")
    with pytest.raises(DataLayerError) as caught:
        registry.add("unlabelled", folder, "dicom", None)
    assert caught.value.code == "NO_LABEL" and str(folder) in str(caught.value)
    skip = DatasetPolicy.from_document({"features": {"image": {"transforms": ["identity"]}}, "label": "label",
                                        "dicom": {"on_reject": "skip"}})
    with pytest.raises(DataLayerError) as caught:
        registry.add("unlabelled", folder, "dicom", skip)
    assert caught.value.code == "NO_USABLE_INSTANCES"
    with pytest.raises(MalformedInput) as caught:
        registry.add("a-file", ct, "dicom", None)
    assert caught.value.code == "MALFORMED_NOT_A_FOLDER" and str(ct) in str(caught.value)
    assert registry.list() == []


def _rewritten(source: Path, target: Path, *remove: str, meta_remove: tuple[str, ...] = ()) -> Dataset:
    """`source` written to `target` without the named elements (dataset and file meta)."""
    ds = pydicom.dcmread(source)
    for keyword in remove:
        delattr(ds, keyword)
    for keyword in meta_remove:
        delattr(ds.file_meta, keyword)
    ds.save_as(target, write_like_original=True)
    return ds


def test_an_instance_without_a_sop_class_uid_is_refused_unwritable_and_nothing_is_registered(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path
) -> None:
    """A non-conformant export whose pixels decode but which names no SOP Class UID, in the
    dataset or its file meta, cannot be stored as a DICOM instance: UNWRITABLE, naming the file
    and the missing attribute; the batch leaves nothing (on_reject: fail)."""
    folder = _folder(tmp_path, [Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("MR_small.dcm"))])
    broken = folder / "000_CT_small.dcm"
    _rewritten(broken, broken, "SOPClassUID", meta_remove=("MediaStorageSOPClassUID",))
    with pytest.raises(DataLayerError) as caught:
        registry.add("no-class", folder, "dicom", None)
    assert caught.value.code == "UNWRITABLE"
    assert str(broken) in str(caught.value) and "SOP Class UID (0008,0016)" in str(caught.value)
    assert "1 of 2 files unusable; nothing was registered" in str(caught.value)
    assert registry.list() == []
    assert not (state_dir / "datasets" / "no-class").exists()


@pytest.mark.parametrize("in_meta", [True, False], ids=["uid-only-in-file-meta", "no-uid-anywhere"])
def test_an_instance_without_its_own_sop_instance_uid_is_stored_under_a_replaced_one(
    registry: DatasetRegistry, tmp_path: Path, state_dir: Path, in_meta: bool
) -> None:
    """An instance whose dataset lacks SOP Instance UID used to keep the ORIGINAL UID in the
    stored copy's file meta (a de-identification leak), or, with none in the file meta either,
    could not be written at all. Now the copy carries one replacement UID, in dataset and file
    meta, and is stored under it."""
    folder = _folder(tmp_path, [Path(get_testdata_file("CT_small.dcm"))])
    source = folder / "000_CT_small.dcm"
    original = pydicom.dcmread(source).SOPInstanceUID
    _rewritten(source, source, "SOPInstanceUID", meta_remove=() if in_meta else ("MediaStorageSOPInstanceUID",))
    report = registry.add("no-instance-uid", folder, "dicom", None)
    assert report.instances == {"ingested": 1}
    (stored_path,) = (state_dir / "datasets" / "no-instance-uid" / "instances").glob("*.dcm")
    stored = pydicom.dcmread(stored_path)
    assert stored.SOPInstanceUID == stored.file_meta.MediaStorageSOPInstanceUID == stored_path.stem
    assert stored.SOPInstanceUID.startswith("2.25.")
    assert original.encode() not in stored_path.read_bytes()


def _with_phi(source: Path, target: Path) -> None:
    """`source` carrying identifiers where the Basic Profile table alone would not reach them."""
    ds = pydicom.dcmread(source)
    ds.preamble = b"PHI-PREAMBLE SMITH^JOHN MRN1234567".ljust(128, b" ")  # TIFF/DICOM dual files use it
    ds.PatientBirthDate = "19500101"
    ds.add_new(0x00100011, "LO", "PHI-NAME-TO-USE")  # a 2025 attribute pydicom cannot name
    ds.add_new(0x00100033, "LO", "PHI-ALT-CALENDAR")  # PatientBirthDateInAlternativeCalendar
    ds.add_new(0x00082999, "UN", b"PHI-UNKNOWN-UN")
    ds.add_new(0x60000022, "LO", "PHI-OVERLAY-DESCRIPTION")
    ds.add_new(0x60001500, "LO", "PHI-OVERLAY-LABEL")
    ds.save_as(target, write_like_original=False)


@pytest.mark.parametrize("retain", [[], ["longitudinal_full_dates"], ["longitudinal_modified_dates"]])
def test_no_identifier_survives_in_the_preamble_unknown_tags_the_patient_module_or_overlays(
        conn, audit, state_dir: Path, tmp_path: Path, retain: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Found by an attack review: the preamble was written back as read; public attributes this
    silo's dictionary cannot name, patient-module attributes the table does not list and overlay
    text were kept; the longitudinal date options kept (or only shifted) the birth date."""
    registry = DatasetRegistry(conn, state_dir / "datasets", audit=audit)
    folder = _folder(tmp_path, [Path(get_testdata_file("CT_small.dcm"))])
    _with_phi(folder / "000_CT_small.dcm", folder / "000_CT_small.dcm")
    policy = DatasetPolicy.default_dicom()
    policy = policy.model_copy(update={"dicom": policy.dicom.model_copy(update={"retain": tuple(retain)})})  # type: ignore[union-attr]
    registry.add("ct", folder, "dicom", policy)
    stored = sorted((state_dir / "datasets" / "ct" / "instances").glob("*.dcm"))
    assert len(stored) == 1
    blob = stored[0].read_bytes()
    assert blob[:128] == b"\0" * 128
    assert b"PHI-" not in blob and b"19500101" not in blob
    ds = pydicom.dcmread(stored[0])
    assert not ds.get("PatientBirthDate")


def test_a_corrupt_deflated_file_and_absurdly_nested_sequences_are_refused_by_code(
        registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    """Both gave a Python traceback (zlib.error, RecursionError) and aborted the folder."""
    import struct

    source = Path(get_testdata_file("CT_small.dcm"))
    good = pydicom.dcmread(source)
    deflated = tmp_path / "deflated.dcm"
    good.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    good.save_as(deflated, write_like_original=False)
    data = deflated.read_bytes()
    body = len(data) // 2  # the deflated stream cut in the middle and followed by noise
    deflated.write_bytes(data[:body] + bytes(range(256)) * 4)
    nested = tmp_path / "nested.dcm"
    plain = pydicom.dcmread(source)
    plain.save_as(nested, write_like_original=False)
    raw = nested.read_bytes()
    start = b"".join(struct.pack("<HH2sHI", 0x0008, 0x2218, b"SQ", 0, 0xFFFFFFFF)
                     + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) for _ in range(3000))
    end = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)) * 3000
    at = raw.index(b"\x10\x00\x10\x00PN")
    nested.write_bytes(raw[:at] + start + end + raw[at:])
    for bad in (deflated, nested):
        folder = _folder(tmp_path, [bad], name=bad.stem)
        with pytest.raises(MalformedInput) as refused:
            registry.add(bad.stem, folder, "dicom", None)
        assert refused.value.code == "MALFORMED_DICOM", refused.value
        assert not list((state_dir / "datasets").glob(f"{bad.stem}*")) and not list((state_dir / "datasets").glob(".staging-*"))


def test_instance_uids_the_table_does_not_list_are_replaced_and_standard_ones_kept() -> None:
    """Found by an attack review: UI attributes outside the table (the source of a multi-frame
    conversion, a concatenation's source) kept the original SOP Instance UID, a link back to the
    PACS. A well-known UID of the standard (a SOP class, a palette) identifies no one: kept."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    original = str(ds.SOPInstanceUID)
    ds.MultiFrameSourceSOPInstanceUID = original
    ds.SOPInstanceUIDOfConcatenationSource = original
    ds.TableFrameOfReferenceUID = original + ".7"
    ds.ReferencedColorPaletteInstanceUID = "1.2.840.10008.1.5.1"  # the standard's hot iron palette
    sop_class = str(ds.SOPClassUID)
    DicomDeidentifier(SECRET).deidentify(ds, file="x")
    for keyword in ("MultiFrameSourceSOPInstanceUID", "SOPInstanceUIDOfConcatenationSource", "TableFrameOfReferenceUID"):
        assert str(ds[keyword].value).startswith("2.25.") and original not in str(ds[keyword].value), keyword
    assert ds.MultiFrameSourceSOPInstanceUID == ds.SOPInstanceUID  # replaced consistently
    assert ds.ReferencedColorPaletteInstanceUID == "1.2.840.10008.1.5.1" and str(ds.SOPClassUID) == sop_class


def test_a_deflated_instance_that_inflates_beyond_the_limit_is_refused_before_it_is_read(
        registry: DatasetRegistry, tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attack review's 1 MB deflated file inflated to 2.2 GB and held ingestion for minutes.
    The limit (1 GiB) is lowered here so that a small file stands for a large one."""
    import silo_node.datasets.dicom_ingest as dicom_ingest

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.add_new(0x00204000, "LT", "0" * 4_000_000)  # ImageComments: compresses to almost nothing
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(bomb, write_like_original=False)
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(dicom_ingest, "MAX_INFLATED_BYTES", 1 << 20)
    folder = _folder(tmp_path, [bomb])
    with pytest.raises(MalformedInput) as refused:
        registry.add("bomb", folder, "dicom", None)
    assert refused.value.code == "MALFORMED_DICOM" and "inflates to more than 1 MiB" in str(refused.value)
    monkeypatch.setattr(dicom_ingest, "MAX_INFLATED_BYTES", 1 << 30)
    registry.add("bomb", folder, "dicom", None)  # under the real limit the same file is an instance


def test_an_overlay_kept_in_the_unused_high_bits_of_the_pixels_is_cleared(
        registry: DatasetRegistry, tmp_path: Path, state_dir: Path) -> None:
    """The retired way to keep an overlay: bits above BitsStored. An attack review found planted
    'text' there in the stored copy and as the training image's brightest feature."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    image = (np.arange(128 * 128, dtype=np.uint16).reshape(128, 128) % 4096)
    text = np.zeros((128, 128), bool)
    text[10:20, 5:120] = True  # stands for a name written over the image
    ds.PixelData = (image | (text.astype(np.uint16) << 15)).tobytes()
    ds.Rows = ds.Columns = 128
    folder = tmp_path / "in"
    folder.mkdir()
    ds.save_as(folder / "a.dcm", write_like_original=False)
    (folder / "labels.csv").write_text("file,label\na.dcm,1\n")
    registry.add("overlay", folder, "dicom", None)
    stored = _stored(state_dir, "overlay")[0]
    pixels = np.frombuffer(stored.PixelData, np.uint16)
    assert int((pixels >> 12).sum()) == 0
    assert np.array_equal(pixels.reshape(128, 128), image)  # the image itself is untouched
