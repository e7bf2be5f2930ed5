"""Reading an Excel workbook export (.xlsx / .xlsm) into the same frame of raw text cells a
CSV gives, with openpyxl (the maintained pure-Python reader of Office Open XML).

Why text cells: types are decided by the dataset policy later, exactly as for CSV, so a
workbook and the CSV saved from it register to the same records. Numbers become their
shortest text (`63`, `1.5`), dates ISO 8601 (`2024-03-01`, with the time when it is not
midnight), formulas their value as Excel last saved it (`data_only`; a formula never
calculated is a missing value). Row numbers are the sheet's own (as Excel shows them), so
every error names a row the data steward can find.

Which sheet: the policy's `sheet`, or the workbook's only sheet. A workbook with several
sheets and none declared is refused (`SHEET_NOT_DECLARED`), naming them: picking one would
register whatever sheet happened to be first. Nothing here writes anything; registration
stays atomic around it.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from silo_node.datasets.errors import MalformedInput
from silo_node.datasets.tabular_reader import RawTable, check_columns

MAX_ROWS_NAMED = 20


def _text(value: Any) -> str | None:
    """A cell as the text a CSV export would hold; None for an empty cell."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    text = str(value)
    return text if text.strip() else None


def _sheet(workbook: Any, declared: str | None, path: Path) -> tuple[Any, str, str]:
    names = list(workbook.sheetnames)
    listing = ", ".join(repr(name) for name in names)
    if declared is not None:
        if declared not in names:
            raise MalformedInput(f"has no sheet {declared!r} (its sheets: {listing}); correct `sheet` in the policy",
                                 file=path, code="SHEET_NOT_FOUND")
        return workbook[declared], declared, "declared in the policy"
    if len(names) != 1:
        raise MalformedInput(f"has {len(names)} sheets ({listing}); set `sheet` in the dataset policy to the one "
                             "holding the records", file=path, code="SHEET_NOT_DECLARED")
    return workbook[names[0]], names[0], "the workbook's only sheet"


# A workbook is a zip of XML: one that unpacks to more than this many times its own size, and
# past the floor, is refused before parsing (an attack review's 311 KB file held ingestion for
# over ten minutes). Real exports compress about 5-20 times.
MAX_UNPACK_RATIO = 200
UNPACK_RATIO_FLOOR_BYTES = 64 << 20


def _check_unpacked_size(data: bytes, path: Path) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())  # zipfile reads no more
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: load_workbook refuses it below with its reason
    if unpacked > UNPACK_RATIO_FLOOR_BYTES and unpacked > MAX_UNPACK_RATIO * len(data):
        raise MalformedInput(f"unpacks to {unpacked >> 20} MiB from {max(len(data) >> 10, 1)} KiB, more than "
                             f"{MAX_UNPACK_RATIO} times its size (a decompression bomb, or not a plain export); "
                             "save it again as .xlsx or as CSV", file=path, code="MALFORMED_SPREADSHEET")


def read_xlsx(data: bytes, path: Path, *, sheet: str | None, missing_values: tuple[str, ...]) -> RawTable:
    """The workbook's sheet as a `RawTable` (format `xlsx`, the sheet named in its dialect)."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    _check_unpacked_size(data, path)
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, TypeError, OSError) as error:
        raise MalformedInput(f"is not a readable .xlsx workbook ({type(error).__name__}); save it again from Excel "
                             "as .xlsx, or as CSV", file=path, code="MALFORMED_SPREADSHEET") from None
    try:
        worksheet, name, source = _sheet(workbook, sheet, path)
        where = f"{path} (sheet {name!r})"
        rows = [(number, [_text(v) for v in values])
                for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1)]
    finally:
        workbook.close()
    rows = [(number, cells) for number, cells in rows if any(cell is not None for cell in cells)]
    if not rows:
        raise MalformedInput("is empty", file=where, code="MALFORMED_EMPTY")
    header_row, header_cells = rows[0]
    while header_cells and header_cells[-1] is None:  # formatting past the last column
        header_cells.pop()
    header = [(cell or "").strip() for cell in header_cells]
    check_columns(header, where, row=header_row)
    width = len(header)
    records: list[list[str | None]] = []
    numbers: list[int] = []
    wide: list[tuple[int, int]] = []
    for number, cells in rows[1:]:
        filled = max(index for index, cell in enumerate(cells) if cell is not None) + 1
        if filled > width:
            wide.append((number, filled))
            continue
        records.append(cells[:width] + [None] * (width - len(cells[:width])))
        numbers.append(number)
    if wide:
        listing = ", ".join(f"row {number} (values up to column {count})" for number, count in wide[:MAX_ROWS_NAMED])
        if len(wide) > MAX_ROWS_NAMED:
            listing += f" and {len(wide) - MAX_ROWS_NAMED} more"
        raise MalformedInput(f"{len(wide)} row(s) have values beyond the header's {width} columns: {listing}",
                             file=where, row=wide[0][0], code="MALFORMED_RAGGED")
    if not records:
        raise MalformedInput("has a header but no records", file=where, code="MALFORMED_EMPTY")
    frame = pd.DataFrame(records, columns=header, dtype="string")
    frame = frame.apply(lambda column: column.str.strip())
    frame = frame.mask(frame.isin(list(missing_values)))
    return RawTable(frame, numbers, "xlsx", {"format": "xlsx", "sheet": name, "sheet_source": source})
