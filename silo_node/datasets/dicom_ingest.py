"""Registering a folder of DICOM files with a labels table.

Each file is read, judged (usable image, burned-in annotation to quarantine, or rejected
with a reason code), de-identified with the Annex E Basic Profile and stored: the
de-identified instance under instances/, its training image in images.npy and its label and
split in index.parquet. With `on_reject: fail` (the default) one rejected file refuses the
folder, and the registry then leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from silo_node.datasets.dicom_pixels import training_image
from silo_node.datasets.errors import InstanceRejected, MalformedInput, PolicyInvalid, tag_text
from silo_node.datasets.minimisation import SPLIT_COLUMN, canonical_text, holdout
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.report import IngestionReport
from silo_node.datasets.tabular import Ingested, file_sha256
from silo_node.datasets.tabular_reader import read_table
from silo_node.deid.dicom_deid import DicomDeidentifier
from typing import Any

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.parquet"
INSTANCES_DIR = "instances"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
DEFLATED = "1.2.840.10008.1.2.1.99"


def _decode_all(ds: Dataset, path: Path) -> None:
    """Converts every element now (pydicom decodes lazily), so a corrupt or truncated value
    is reported with its tag here rather than surfacing later in the middle of a step."""
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
            value = element.value
        except Exception as error:  # pydicom's value converters raise many types; name the tag
            raise MalformedInput(f"element cannot be read ({type(error).__name__})", file=path,
                                 tag=tag_text(tag), code="MALFORMED_DICOM") from None
        if element.VR == "SQ" and value is not None:
            for item in value:
                _decode_all(item, path)


def _check_complete(ds: Dataset, path: Path) -> None:
    """A truncated file reads without error in pydicom (it stops at the end of the bytes);
    the last element then claims more bytes than the file has, or nothing follows the
    meta header at all."""
    tags = list(ds.keys())
    if str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == DEFLATED:
        return  # element offsets are positions in the inflated stream, not in the file
    if not tags:
        raise MalformedInput("no data elements after the header (file truncated?)", file=path, code="MALFORMED_DICOM")
    last = ds.get_item(max(tags))
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > path.stat().st_size:
        raise MalformedInput(f"file ends inside this element ({tell + length - path.stat().st_size} bytes missing; truncated)",
                             file=path, tag=tag_text(max(tags)), code="MALFORMED_TRUNCATED")


def read_instance(path: Path) -> Dataset:
    """The dataset in `path`, checked to be complete, with every element decoded."""
    ds = _read(path)
    _check_complete(ds, path)
    _decode_all(ds, path)
    return ds


MAX_INFLATED_BYTES = 1 << 30  # a deflated instance larger than this once inflated is refused


def _check_inflated_size(path: Path) -> None:
    """A deflated instance is inflated whole by pydicom: a megabyte of zeros can inflate to
    gigabytes and hold the ingestion for minutes (an attack review's 1 MB file: 2.2 GB, 8 min).
    Measured here in bounded steps first; a file whose meta group cannot be read this way is
    left to pydicom's own checks."""
    with path.open("rb") as handle:
        head = handle.read(144)
        if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
            return
        meta = handle.read(struct.unpack("<I", head[140:144])[0])
        if DEFLATED.encode() not in meta:
            return
        inflater, size = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := handle.read(1 << 20):
            try:
                while chunk:
                    size += len(inflater.decompress(chunk, 1 << 24))
                    if size > MAX_INFLATED_BYTES:
                        raise MalformedInput(f"deflated data inflates to more than {MAX_INFLATED_BYTES >> 20} MiB "
                                             "(a decompression bomb, or not an image this silo can use)",
                                             file=path, code="MALFORMED_DICOM")
                    chunk = inflater.unconsumed_tail
            except zlib.error:
                return  # corrupt: pydicom refuses it below with MALFORMED_DICOM


def _read(path: Path) -> Dataset:
    """The dataset in `path`, or InstanceRejected (NOT_DICOM) / MalformedInput (truncated).
    Files without the DICOM preamble are accepted only if they parse as an image-bearing
    dataset with a SOP Class UID."""
    _check_inflated_size(path)
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except Exception as error:  # noqa: BLE001 - pydicom's parsers raise many types (zlib.error for a corrupt
        # deflated body, RecursionError for absurdly nested sequences): the verdict is the same
        kind = "corrupt compressed data" if isinstance(error, zlib.error) else type(error).__name__
        raise MalformedInput(f"DICOM file cannot be parsed ({kind})", file=path, code="MALFORMED_DICOM") from None
    try:
        ds = pydicom.dcmread(path, force=True)
        uid = str(ds.get("SOPClassUID", ""))
    except Exception:  # force-reading arbitrary bytes fails arbitrarily; the verdict is the same
        raise InstanceRejected("not a DICOM file", file=path, code="NOT_DICOM") from None
    if not uid or not all(part.isdigit() for part in uid.split(".")):
        raise InstanceRejected("not a DICOM file", file=path, code="NOT_DICOM")
    return ds


def _unnamed(tag: int) -> str:
    group = tag >> 16
    if group % 2:
        return "private"
    return "curve/overlay" if 0x5000 <= group <= 0x60FF else "not in the DICOM dictionary"


def _labels(folder: Path, policy: DatasetPolicy) -> tuple[dict[str, str], dict[str, str], Path]:
    assert policy.dicom is not None
    table_path = Path(policy.dicom.labels)
    table_path = table_path if table_path.is_absolute() else folder / table_path
    if not table_path.is_file():
        raise PolicyInvalid(f"labels table {table_path} not found (set dicom.labels in the policy)")
    raw = read_table(table_path, table_path.read_bytes(), encoding=policy.encoding, missing_values=policy.missing_values)
    key, label = policy.dicom.file_column, policy.dicom.label_column
    for needed in (key, label):
        if needed not in raw.frame.columns:
            raise MalformedInput("column named by the policy is missing", file=table_path, row=1, column=needed,
                                 code="MALFORMED_HEADER")
    keys = raw.frame[key].astype("string").str.strip()
    labels = dict(zip(keys, canonical_text(raw.frame[label])))
    splits: dict[str, str] = {}
    if policy.split.column in raw.frame.columns:
        split = raw.frame[policy.split.column].astype("string").str.strip().str.lower()
        bad = ~split.isin(["train", "test"])
        if bad.any():
            row = raw.row_numbers[int(np.flatnonzero(bad.to_numpy())[0])] if raw.row_numbers else None
            raise MalformedInput("split must be 'train' or 'test'", file=table_path, row=row,
                                 column=policy.split.column, code="MALFORMED_TYPE")
        splits = dict(zip(keys, split))
    return labels, splits, table_path


def _clear_bits_above_stored(ds: Dataset) -> None:
    """Zero the bits above BitsStored in uncompressed unsigned pixel data, in the stored copy
    and so in the training image: they are the retired place for an overlay (text, marks
    drawn over the image), which an attack review showed surviving as the training image's
    brightest feature. Compressed or signed data is left as it is."""
    try:
        allocated, stored = int(ds.get("BitsAllocated") or 0), int(ds.get("BitsStored") or 0)
        syntax = pydicom.uid.UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")))
        if not (0 < stored < allocated <= 32) or int(ds.get("PixelRepresentation") or 0) != 0 \
                or "PixelData" not in ds or not syntax.is_little_endian or syntax.is_compressed:
            return
        pixels = ds.pixel_array
    except Exception:  # noqa: BLE001 - undecodable: training_image refuses it with its reason
        return
    masked = pixels & np.asarray((1 << stored) - 1, dtype=pixels.dtype)
    if (masked != pixels).any():
        ds.PixelData = masked.astype(pixels.dtype.newbyteorder("<")).tobytes()


_QUARANTINED = {"BurnedInAnnotation": "BURNED_IN_ANNOTATION",
                "RecognizableVisualFeatures": "RECOGNIZABLE_VISUAL_FEATURES"}


def _ingest_one(
    path: Path, relative: str, labels: dict[str, str], splits: dict[str, str], deid: DicomDeidentifier,
    size: int, staging: Path,
) -> tuple[NDArray[Any], str, str, str] | str:
    """(image, new SOP Instance UID, label, split or '') for a usable instance; the reason for
    one quarantined because it declares burned-in annotation or recognisable visual features
    (not stored at all: its pixels may show a name or a face)."""
    ds = read_instance(path)
    if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        raise InstanceRejected("is a DICOMDIR index, not an instance", file=path, code="DICOMDIR")
    original_uid = str(ds.get("SOPInstanceUID", ""))
    label = labels.get(relative, labels.get(original_uid))
    split = splits.get(relative, splits.get(original_uid, ""))
    for flag in ("BurnedInAnnotation", "RecognizableVisualFeatures"):
        # any YES (a multi-valued element counts too): the pixels may show a name or a face
        value = ds.get(flag, "")
        parts = ([] if value is None else str(value).split("\\") if isinstance(value, str)
                 else [str(part) for part in value])
        if "YES" in (part.strip().upper() for part in parts):
            return _QUARANTINED[flag]
    _clear_bits_above_stored(ds)
    image = training_image(ds, size, str(path))
    if label is None or pd.isna(label):
        raise InstanceRejected("has no label in the labels table", file=path, code="NO_LABEL")
    deid.deidentify(ds, file=str(path))
    if not ds.get("SOPInstanceUID"):
        # no UID of its own anywhere: the copy is stored under, and carries, one minted from its path
        minted = UID(deid.replace_uid(relative))
        ds.SOPInstanceUID = minted
        ds.ensure_file_meta()
        ds.file_meta.MediaStorageSOPInstanceUID = minted
    new_uid = str(ds.SOPInstanceUID)
    if not ds.get("SOPClassUID") and not getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None):
        raise InstanceRejected("has no SOP Class UID (0008,0016), which a stored DICOM instance needs",
                               file=path, code="UNWRITABLE")
    try:
        ds.save_as(staging / INSTANCES_DIR / f"{new_uid}.dcm", write_like_original=False)
    except (ValueError, TypeError, OverflowError, struct.error) as error:
        raise InstanceRejected(f"de-identified instance cannot be written ({type(error).__name__})",
                               file=path, code="UNWRITABLE") from None
    return image, new_uid, str(label), split


def ingest_dicom(name: str, folder: Path, policy: DatasetPolicy, staging: Path, secret: bytes) -> Ingested:
    if not folder.is_dir():
        raise MalformedInput("expected a folder of DICOM files", file=folder, code="MALFORMED_NOT_A_FOLDER")
    if policy.dicom is None:
        raise PolicyInvalid("a DICOM dataset's policy needs a `dicom:` section")
    if set(policy.features) != {"image"}:
        raise PolicyInvalid("a DICOM dataset's only feature is `image`")
    labels, splits, labels_path = _labels(folder, policy)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != labels_path
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    deid = DicomDeidentifier(secret, policy.dicom.retain)
    (staging / INSTANCES_DIR).mkdir()
    outcomes: Counter[str] = Counter()
    content = hashlib.sha256()
    images: list[NDArray[Any]] = []
    rows: list[dict[str, str]] = []
    first_rejection: InstanceRejected | MalformedInput | None = None
    for path in files:
        relative = path.relative_to(folder).as_posix()
        content.update(relative.encode() + b"\x00" + file_sha256(path).encode() + b"\n")
        try:
            with warnings.catch_warnings():
                # pydicom's warnings quote element values (names, UIDs): keep them off the console.
                warnings.simplefilter("ignore")
                try:
                    result = _ingest_one(path, relative, labels, splits, deid, policy.dicom.image_size, staging)
                except RecursionError:  # decoding or de-identifying sequences nested thousands deep
                    raise MalformedInput("sequences are nested too deeply to read", file=path,
                                         code="MALFORMED_DICOM") from None
        except (InstanceRejected, MalformedInput) as error:
            outcomes[f"rejected: {error.code}"] += 1
            first_rejection = first_rejection or error
            continue
        if isinstance(result, str):
            outcomes[f"quarantined: {result}"] += 1
            continue
        image, new_uid, label, split = result
        images.append(image)
        rows.append({"instance": new_uid, policy.label: label, SPLIT_COLUMN: split})
        outcomes["ingested"] += 1
    rejected = sum(count for outcome, count in outcomes.items() if outcome.startswith("rejected"))
    if first_rejection is not None and policy.dicom.on_reject == "fail":
        first_rejection.args = (f"{first_rejection} ({rejected} of {len(files)} files unusable; "
                                "nothing was registered; use on_reject: skip to leave them out)",)
        raise first_rejection
    if not rows:
        raise InstanceRejected("no usable image instance", file=folder, code="NO_USABLE_INSTANCES")
    index = pd.DataFrame(rows)
    content_sha256 = content.hexdigest()
    if not (index[SPLIT_COLUMN] != "").all():
        digests = [hashlib.sha256(image.tobytes() + str(label).encode()).digest()
                   for image, label in zip(images, index[policy.label])]
        index[SPLIT_COLUMN] = holdout(digests, policy.split.holdout_fraction)
    np.save(staging / IMAGES_FILE, np.stack(images).astype(np.float32))
    index.to_parquet(staging / INDEX_FILE, index=False)
    report = IngestionReport(
        name=name, kind="dicom", source=str(folder), content_sha256=content_sha256,
        records_in=len(files), records_kept=len(index),
        n_train=int((index[SPLIT_COLUMN] == "train").sum()), n_test=int((index[SPLIT_COLUMN] == "test").sum()),
        identifiers=[{"where": f"{tag_text(tag)} {pydicom.datadict.keyword_for_tag(tag) or _unnamed(tag)}",
                      "kind": action, "how": "annex_e"} for tag, action in sorted(deid.touched.items())],
        instances=dict(outcomes),
        notes=[f"PS3.15 Annex E Basic Profile; retain options: {', '.join(sorted(deid.retain)) or 'none'}",
               f"images stored as {policy.dicom.image_size}x{policy.dicom.image_size} grey, scaled to [0, 1]"],
    )
    schema = {"image": f"float32[{policy.dicom.image_size},{policy.dicom.image_size}]", policy.label: "text",
              SPLIT_COLUMN: "text"}
    stored = hashlib.sha256(file_sha256(staging / IMAGES_FILE).encode() + file_sha256(staging / INDEX_FILE).encode())
    return Ingested(report, schema, stored.hexdigest())
