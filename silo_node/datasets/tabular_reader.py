"""Reading a hospital's tabular export (CSV or Parquet) into a frame of raw cells.

CSV is parsed with the standard `csv` module rather than pandas so that every problem can be
reported with the file and the physical line it is on: undecodable bytes, ragged rows,
duplicated or blank column names, an empty file. Cells stay text here; types are decided by
the policy later (a numeric feature with a non-number is a "wrong type" error then).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from silo_node.datasets.errors import MalformedInput

PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class RawTable:
    """The export as read: cells (text for CSV, Arrow types for Parquet), the physical line
    of each record (for error messages; None for Parquet, where records are numbered), and
    the file's bytes hash."""

    frame: pd.DataFrame
    row_numbers: list[int] | None
    file_format: str


def _check_columns(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name.strip():
            raise MalformedInput(f"column {index + 1} has no name", file=path, row=1, code="MALFORMED_HEADER")
        if name in seen:
            raise MalformedInput("column name appears more than once", file=path, row=1, column=name, code="MALFORMED_DUPLICATE_COLUMN")
        seen.add(name)


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise MalformedInput(
            f"bytes at offset {error.start} are not valid {encoding} (set `encoding` in the policy if the export uses another)",
            file=path, row=line, code="MALFORMED_ENCODING",
        ) from None
    except LookupError:
        raise MalformedInput(f"unknown encoding {encoding!r}", file=path, code="MALFORMED_ENCODING") from None
    return text.removeprefix("\ufeff")


def read_csv(data: bytes, path: Path, *, encoding: str, missing_values: tuple[str, ...]) -> RawTable:
    if not data.strip():
        raise MalformedInput("file is empty", file=path, code="MALFORMED_EMPTY")
    text = _decode(data, path, encoding)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise MalformedInput("contains NUL bytes (binary data, not CSV)", file=path, row=line, code="MALFORMED_ENCODING")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
        _check_columns(header, path)
        rows: list[list[str]] = []
        lines: list[int] = []
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(header):
                raise MalformedInput(
                    f"has {len(record)} fields but the header has {len(header)}",
                    file=path, row=reader.line_num, code="MALFORMED_RAGGED",
                )
            rows.append(record)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise MalformedInput(f"not valid CSV ({error})", file=path, row=reader.line_num, code="MALFORMED_CSV") from None
    if not rows:
        raise MalformedInput("has a header but no records", file=path, code="MALFORMED_EMPTY")
    frame = pd.DataFrame(rows, columns=header, dtype="string")
    frame = frame.apply(lambda column: column.str.strip())
    frame = frame.mask(frame.isin(list(missing_values)))
    return RawTable(frame, lines, "csv")


def read_parquet(data: bytes, path: Path, *, missing_values: tuple[str, ...]) -> RawTable:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        _check_columns([str(name) for name in parquet.schema_arrow.names], path)
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
    return RawTable(frame, None, "parquet")


def read_table(path: Path, data: bytes, *, encoding: str, missing_values: tuple[str, ...]) -> RawTable:
    """Parquet when the file says so (suffix or magic bytes), CSV otherwise."""
    if path.suffix.lower() in {".parquet", ".pq"} or data[:4] == PARQUET_MAGIC:
        return read_parquet(data, path, missing_values=missing_values)
    return read_csv(data, path, encoding=encoding, missing_values=missing_values)
