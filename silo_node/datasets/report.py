"""What registration did, in words a data steward can check: which columns or instances
were kept, generalised, dropped, quarantined or rejected, and why. Contains counts, column
names and reason codes only, never a cell or tag value, so it is safe to store and print."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


_DELIMITER_NAMES = {"\t": "tab", ",": "comma ','", ";": "semicolon ';'", "|": "pipe '|'"}


def delimiter_name(delimiter: str) -> str:
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


def describe_dialect(dialect: dict[str, str]) -> str:
    """`CSV, delimiter semicolon ';' (sniffed), encoding cp1252 (detected ...)` in words."""
    parts = [dialect.get("format", "?").upper()]
    if "delimiter" in dialect:
        parts.append(f"delimiter {delimiter_name(dialect['delimiter'])} ({dialect.get('delimiter_source', '?')})")
    if "encoding" in dialect:
        parts.append(f"encoding {dialect['encoding']} ({dialect.get('encoding_source', '?')})")
    if "sheet" in dialect:
        parts.append(f"sheet {dialect['sheet']!r} ({dialect.get('sheet_source', '?')})")
    return ", ".join(parts)


@dataclass(frozen=True)
class IngestionReport:
    name: str
    kind: str
    source: str
    content_sha256: str
    records_in: int
    records_kept: int
    n_train: int
    n_test: int
    columns: list[dict[str, str]] = field(default_factory=list)  # column, action, reason
    identifiers: list[dict[str, str]] = field(default_factory=list)  # column/tag, kind, how
    instances: dict[str, int] = field(default_factory=dict)  # outcome or reason code -> count
    notes: list[str] = field(default_factory=list)
    # how a tabular export was read: format, encoding, delimiter and where each came from
    # (declared in the policy, detected, sniffed). Absent from reports stored before it existed.
    dialect: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IngestionReport":
        return cls(**json.loads(text))

    def __str__(self) -> str:
        lines = [
            f"Dataset {self.name!r} ({self.kind}) registered from {self.source}",
            f"  content sha256: {self.content_sha256}",
            f"  records: {self.records_in} read, {self.records_kept} kept "
            f"({self.n_train} train / {self.n_test} test)",
        ]
        if self.dialect:
            lines.append(f"  read as: {describe_dialect(self.dialect)}")
        if self.identifiers:
            lines.append("  identifiers found:")
            lines += [f"    - {i['where']}: {i['kind']} (detected by {i['how']})" for i in self.identifiers]
        if self.columns:
            lines.append("  columns:")
            width = max(len(c["column"]) for c in self.columns)
            lines += [f"    {c['action']:<11} {c['column']:<{width}}  {c['reason']}" for c in self.columns]
        if self.instances:
            lines.append("  instances:")
            lines += [f"    {count:>6}  {outcome}" for outcome, count in sorted(self.instances.items())]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)
