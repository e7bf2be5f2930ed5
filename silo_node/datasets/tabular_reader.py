"""Reading a hospital's tabular export (CSV or Parquet) into a frame of raw cells.

CSV is parsed with the standard `csv` module rather than pandas so that every problem can be
reported with the file and the physical line it is on: undecodable bytes, ragged rows,
duplicated or blank column names, an empty file. Cells stay text here; types are decided by
the policy later (a numeric feature with a non-number is a "wrong type" error then).

Real exports come from many systems: semicolon-separated files from European hospital
software, cp1252 text from Windows tools, UTF-16 "Unicode text" from Excel. Unless the policy
declares them, the encoding and the delimiter are detected and the result is recorded in the
ingestion report (`RawTable.dialect`), so the data steward sees how the file was read. Every
ragged row is named in one error (up to `MAX_ROWS_NAMED`), so one edit fixes them all.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from silo_node.datasets.errors import MalformedInput
from silo_node.datasets.report import delimiter_name

PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"  # .xlsx, .ods and other office documents are zip containers
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls
XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
SPREADSHEET_SUFFIXES = frozenset({".xls", ".ods"})  # refused: save as .xlsx or CSV
DELIMITERS = ",;\t|"
MAX_ROWS_NAMED = 20
_SNIFF_LINES = 50
# Tried in order when the policy declares no encoding. latin-1 decodes every byte, so it is
# last: a file that is neither UTF-8 nor cp1252 is still read, and the report says how.
_FALLBACK_ENCODINGS = ("cp1252", "latin-1")


@dataclass(frozen=True)
class RawTable:
    """The export as read: cells (text for CSV, Arrow types for Parquet), the physical line
    of each record (for error messages; None for Parquet, where records are numbered), and
    the file's bytes hash."""

    frame: pd.DataFrame
    row_numbers: list[int] | None
    file_format: str
    dialect: dict[str, str] = field(default_factory=dict)  # how the file was read, for the report


def check_columns(names: list[str], path: Path | str, *, row: int = 1) -> None:
    """Every column named, no name twice (`row`: where the header is)."""
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name.strip():
            raise MalformedInput(f"column {index + 1} has no name", file=path, row=row, code="MALFORMED_HEADER")
        if name in seen:
            raise MalformedInput("column name appears more than once", file=path, row=row, column=name,
                                 code="MALFORMED_DUPLICATE_COLUMN")
        seen.add(name)


def is_xlsx(data: bytes) -> bool:
    """True for an Office Open XML workbook (a zip holding `xl/workbook.xml`), whatever its name."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise MalformedInput(
            f"bytes at offset {error.start} are not valid {encoding} (correct `encoding` in the policy, "
            "or remove it to have the encoding detected)",
            file=path, row=_line_of(data, error.start), code="MALFORMED_ENCODING",
        ) from None
    except LookupError:
        raise MalformedInput(f"unknown encoding {encoding!r}", file=path, code="MALFORMED_ENCODING") from None
    return text.removeprefix("\ufeff")


def decode_export(data: bytes, path: Path, encoding: str | None) -> tuple[str, dict[str, str]]:
    """The export's text and how it was decoded. A declared encoding is used as is (an
    undecodable byte is an error naming its row); otherwise UTF-16 with a byte-order mark,
    then UTF-8 (with or without BOM), then cp1252, then latin-1."""
    if encoding is not None:
        return _decode(data, path, encoding), {"encoding": encoding, "encoding_source": "declared in the policy"}
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode(data, path, "utf-16"), {"encoding": "utf-16", "encoding_source": "detected (byte-order mark)"}
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        first_bad = _line_of(data, error.start)
    else:
        bom = data.startswith(b"\xef\xbb\xbf")
        return text, {"encoding": "utf-8-sig" if bom else "utf-8", "encoding_source": "detected"}
    for fallback in _FALLBACK_ENCODINGS:
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError:
            continue
        return text, {"encoding": fallback,
                      "encoding_source": f"detected (not valid UTF-8 from row {first_bad}; set `encoding` to override)"}
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _widths(sample: str, delimiter: str, truncated: bool) -> list[int]:
    """Field counts of the sample's records; none when it does not parse with `delimiter` (a
    field over the csv module's limit, say: the full read then names the row)."""
    try:
        records = [r for r in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
                   if r and not (len(r) == 1 and not r[0].strip())]
    except csv.Error:
        return []
    if truncated and len(records) > 2:
        records = records[:-1]  # the sample may end inside a quoted field
    return [len(r) for r in records]


def _consistent(widths: list[int]) -> bool:
    """More than one column, and (almost) every sampled record as wide as the header: a
    wrong delimiter gives one column, or widths that vary with the cell contents."""
    if not widths or widths[0] < 2:
        return False
    return sum(w == widths[0] for w in widths) >= 0.8 * len(widths)


def sniff_delimiter(text: str, path: Path) -> tuple[str, str]:
    """(delimiter, how it was chosen) from the first lines: csv.Sniffer's answer when the
    sample parses into a consistent table with it, else the candidate giving the widest
    consistent table, else tab for .tsv and comma otherwise (a one-column file)."""
    lines = text.splitlines()
    truncated = len(lines) > _SNIFF_LINES
    sample = "\n".join(lines[:_SNIFF_LINES])
    try:
        sniffed: str | None = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed is not None and sniffed in DELIMITERS and _consistent(_widths(sample, sniffed, truncated)):
        return sniffed, "sniffed"
    best: tuple[int, str] | None = None
    for candidate in DELIMITERS:
        widths = _widths(sample, candidate, truncated)
        if _consistent(widths) and (best is None or widths[0] > best[0]):
            best = (widths[0], candidate)
    if best is not None:
        return best[1], "sniffed"
    by_header = [(width[0], c) for c in DELIMITERS for width in [_widths(lines[0], c, False) or [0]]] if lines else []
    widest = max(by_header, default=(0, ","), key=lambda pair: pair[0])
    if widest[0] > 1:
        return widest[1], "sniffed from the header line (later lines vary in width)"
    return ("\t" if path.suffix.lower() == ".tsv" else ","), "default (no separator found in the first lines)"


def _ragged_error(bad: list[tuple[int, int]], width: int, path: Path, dialect: dict[str, str]) -> MalformedInput:
    """One error naming every ragged row (up to MAX_ROWS_NAMED, then a count)."""
    listing = ", ".join(f"row {line} ({count} fields)" for line, count in bad[:MAX_ROWS_NAMED])
    if len(bad) > MAX_ROWS_NAMED:
        listing += f" and {len(bad) - MAX_ROWS_NAMED} more"
    problem = f"{len(bad)} row(s) do not have the header's {width} fields: {listing}"
    if dialect.get("delimiter_source") != "declared in the policy":
        problem += (f"; read with delimiter {delimiter_name(dialect['delimiter'])} ({dialect['delimiter_source']}): "
                    "if the export uses another, set `delimiter` in the policy")
    return MalformedInput(problem, file=path, row=bad[0][0], code="MALFORMED_RAGGED")


def read_csv(
    data: bytes, path: Path, *, encoding: str | None, missing_values: tuple[str, ...], delimiter: str | None = None
) -> RawTable:
    if not data.strip():
        raise MalformedInput("file is empty", file=path, code="MALFORMED_EMPTY")
    text, dialect = decode_export(data, path, encoding)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise MalformedInput("contains NUL bytes (binary data, not CSV)", file=path, row=line, code="MALFORMED_ENCODING")
    if delimiter is None:
        delimiter, how = sniff_delimiter(text, path)
    elif delimiter in "\r\n\"":
        raise MalformedInput(f"delimiter {delimiter!r} in the policy cannot separate fields", file=path, code="MALFORMED_CSV")
    else:
        how = "declared in the policy"
    dialect |= {"delimiter": delimiter, "delimiter_source": how}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
        check_columns(header, path)
        rows: list[list[str]] = []
        lines: list[int] = []
        ragged: list[tuple[int, int]] = []
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(header):
                ragged.append((reader.line_num, len(record)))
                continue
            rows.append(record)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise MalformedInput(f"not valid CSV ({error})", file=path, row=reader.line_num, code="MALFORMED_CSV") from None
    if ragged:
        raise _ragged_error(ragged, len(header), path, dialect)
    if not rows:
        raise MalformedInput("has a header but no records", file=path, code="MALFORMED_EMPTY")
    frame = pd.DataFrame(rows, columns=header, dtype="string")
    frame = frame.apply(lambda column: column.str.strip())
    frame = frame.mask(frame.isin(list(missing_values)))
    return RawTable(frame, lines, "csv", {"format": "csv", **dialect})


def _refuse_spreadsheet(path: Path) -> None:
    raise MalformedInput(
        "is a spreadsheet this silo does not read (a legacy .xls or an OpenDocument .ods); save the sheet "
        "as .xlsx or as CSV (Excel: File > Save As > CSV UTF-8) and register that file",
        file=path, code="MALFORMED_SPREADSHEET",
    )


def read_parquet(data: bytes, path: Path, *, missing_values: tuple[str, ...]) -> RawTable:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        check_columns([str(name) for name in parquet.schema_arrow.names], path)
        table = parquet.read()
    except (pa.ArrowException, OSError) as error:
        raise MalformedInput(f"not a readable Parquet file ({type(error).__name__})", file=path, code="MALFORMED_PARQUET") from None
    if table.num_rows == 0:
        raise MalformedInput("has no records", file=path, code="MALFORMED_EMPTY")
    frame = table.to_pandas(types_mapper=None)
    frame.columns = [str(c) for c in frame.columns]
    frame = frame.reset_index(drop=True)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].mask(frame[column].isin(list(missing_values)))
    return RawTable(frame, None, "parquet", {"format": "parquet"})


def read_table(
    path: Path, data: bytes, *, encoding: str | None, missing_values: tuple[str, ...], delimiter: str | None = None,
    sheet: str | None = None,
) -> RawTable:
    """Parquet when the file says so (suffix or magic bytes), an Excel workbook (.xlsx/.xlsm,
    or any zip holding a workbook) through `xlsx_reader`, a clear refusal for other
    spreadsheets, CSV otherwise. `encoding` / `delimiter`: None detects them; `sheet`: the
    workbook's sheet (None: its only one)."""
    if path.suffix.lower() in {".parquet", ".pq"} or data[:4] == PARQUET_MAGIC:
        return read_parquet(data, path, missing_values=missing_values)
    if path.suffix.lower() in XLSX_SUFFIXES or (data.startswith(ZIP_MAGIC) and is_xlsx(data)):
        from silo_node.datasets.xlsx_reader import read_xlsx  # openpyxl loads only for workbooks

        return read_xlsx(data, path, sheet=sheet, missing_values=missing_values)
    if path.suffix.lower() in SPREADSHEET_SUFFIXES or data.startswith((ZIP_MAGIC, OLE_MAGIC)):
        _refuse_spreadsheet(path)
    return read_csv(data, path, encoding=encoding, missing_values=missing_values, delimiter=delimiter)
