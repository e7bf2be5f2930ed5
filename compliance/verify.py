"""Prove an audit log intact, or name the first entry that is not.

What is checked, in index order, so that the *first* problem is the one reported:

1. entries are stored at indexes 0, 1, 2, … without gaps (a deleted row leaves one);
2. each entry is canonical JSON of our entry shape, names its own position (`index`) and
   this log's origin (an inserted, swapped or reordered entry contradicts its position);
3. every checkpoint, in signing order: well formed, of this origin, signed with the trusted
   key (pinned by the officer, or the node's own key), never shrinking, not larger than the
   entries present (truncated tail), its root equal to the recomputed root of that prefix,
   and consistent with the previous checkpoint by an RFC 9162 consistency proof;
4. every entry is covered by a checkpoint of exactly its size — the log signs one on every
   append, so an entry without one was added without the key or had its checkpoint removed.

An entry is "bad" at the smallest index no valid checkpoint vouches for: with a checkpoint
per append, the first checkpoint whose root stops matching covers exactly one new entry.
Optionally the log is also checked against checkpoints witnesses hold (the aggregator for a
silo's log, the silos for the aggregator's), which catches a rewrite by someone who also had
the signing key.

Rollback — the newest entries removed *together with* their checkpoints — leaves a shorter
log that is internally perfect, so no local check can see it. It is caught only against
something outside the log file: checkpoints a witness holds, or the size of the last
checkpoint the aggregator acknowledged, which a silo keeps in its own database. Without
either, the result says the tail is UNVERIFIABLE instead of claiming more than was checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from compliance.checkpoints import SignedCheckpoint
from compliance.entry import AuditEntry
from compliance.errors import InvalidEvent, InvalidProof, MalformedCheckpoint, SignatureInvalid
from compliance.log_store import CheckpointRow, RawLog, read_raw_log
from compliance.merkle import EMPTY_ROOT, MerkleTree, verify_consistency
from compliance.signing import fingerprint
from healthfed_common.canonical_json import canonical_json


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong: the first bad entry index and why."""

    index: int
    reason: str


@dataclass
class VerificationResult:
    """Outcome of verifying one log; `tree` is the recomputed tree of all stored entries."""

    db_path: Path
    origin: str | None
    trusted_key_fingerprint: str
    entries: int
    checkpoints_checked: int
    consistency_proofs_checked: int
    latest: SignedCheckpoint | None
    problem: Problem | None
    witness_checkpoints_checked: int = 0
    rollback_anchor: str | None = None
    """What vouched for the log's length (witness checkpoints, an acknowledged size); None
    when nothing outside the file did, so a rollback is unverifiable."""
    vouched_size: int = 0
    """How many entries something outside the file vouched for; entries after it were
    appended since the last witnessed checkpoint and their removal would not show."""
    tree: MerkleTree = field(default_factory=MerkleTree, repr=False)
    parsed: list[AuditEntry] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.problem is None

    @property
    def rollback_checked(self) -> bool:
        """Whether something outside the file vouched for the log's length."""
        return self.rollback_anchor is not None

    @property
    def rollback_statement(self) -> str:
        """One sentence on whether removal of the newest entries together with their
        checkpoints (a rollback) was ruled out, and by what."""
        if self.rollback_anchor is not None:
            statement = f"Rollback checked against {self.rollback_anchor}."
            if self.vouched_size == self.entries - 1:
                statement += (f" Entry {self.vouched_size} came after the last witnessed checkpoint: "
                              "no witness vouches for it yet, so its removal would not show.")
            elif self.vouched_size < self.entries:
                statement += (
                    f" Entries {self.vouched_size}..{self.entries - 1} came after the last witnessed "
                    "checkpoint: no witness vouches for them yet, so their removal would not show."
                )
            return statement
        return (
            "Rollback UNVERIFIABLE: no witness was available, so the newest entries could have "
            "been removed together with their checkpoints; verify with --witness FILE (for a "
            "silo's log the aggregator's audit/witness.sqlite3, for the aggregator's log a "
            "hospital's)."
        )

    def summary(self) -> str:
        """One paragraph an officer can paste into a ticket."""
        key = f"key {self.trusted_key_fingerprint[:16]}…"
        witness = (
            f", {self.witness_checkpoints_checked} witnessed checkpoints matched"
            if self.witness_checkpoints_checked
            else ""
        )
        if self.problem is None:
            return (
                f"VERIFIED: {self.entries} entries, {self.checkpoints_checked} signed "
                f"checkpoints and {self.consistency_proofs_checked} consistency proofs checked "
                f"with {key}{witness}. {self.rollback_statement}"
            )
        return (
            f"FAILED at entry {self.problem.index}: {self.problem.reason}. ({self.entries} "
            f"entries stored; {self.checkpoints_checked} checkpoints verified with {key} "
            f"before the failure{witness}.)"
        )


def verify_log(
    db_path: Path,
    trusted_public_key: bytes,
    witnessed: list[SignedCheckpoint] | None = None,
    *,
    expected: bool = False,
    acknowledged: Acknowledged | None = None,
) -> VerificationResult:
    """Verify the log file at `db_path` against `trusted_public_key` (raw Ed25519).

    Raises `LogCorrupt` when the file is an audit log that can no longer be read whole
    (`expected`: it sits where a node keeps its log, see `read_raw_log`)."""
    return verify_raw_log(
        read_raw_log(db_path, expected=expected), trusted_public_key, witnessed,
        acknowledged=acknowledged,
    )


@dataclass(frozen=True)
class Acknowledged:
    """A log size a witness confirmed, as recorded outside the log file (e.g. a silo's
    database keeps the size of the last checkpoint the aggregator accepted)."""

    size: int
    source: str


WitnessStores = Sequence[tuple[str, Sequence[SignedCheckpoint]]]
"""Witnessed checkpoints grouped by the store (named for people) that held them."""


def verify_raw_log(
    raw: RawLog,
    trusted_public_key: bytes,
    witnessed: list[SignedCheckpoint] | WitnessStores | None = None,
    *,
    acknowledged: Acknowledged | None = None,
) -> VerificationResult:
    """Verify already-read log contents (see the module docstring for the checks).

    `witnessed` is either the checkpoints themselves or, so that a failure can say which
    witness holds the checkpoint the log contradicts (and, for equivocation, which one holds a
    checkpoint it matches), the checkpoints grouped by the store they came from."""
    tree = MerkleTree()
    parsed: list[AuditEntry] = []
    entry_problem: Problem | None = None
    for position, (idx, data) in enumerate(raw.entries):
        if idx != position:
            entry_problem = Problem(position, _gap_reason(position, idx))
            break
        reason = _entry_problem(position, data, raw.origin)
        if reason:
            entry_problem = Problem(position, reason)
            break
        parsed.append(AuditEntry.from_bytes(data, f"entry {position}"))
        tree.append_entry(data)
    if entry_problem is not None:
        # Keep hashing what is stored so checkpoint checks can still judge earlier prefixes.
        for _idx, data in raw.entries[tree.size :]:
            tree.append_entry(data)

    state = _CheckpointWalk(raw, tree, trusted_public_key)
    state.walk()
    problems = [p for p in (entry_problem, state.problem) if p is not None]
    witness_count = 0
    anchors: list[str] = []
    held = _with_sources(witnessed)
    witnessed_size = max((c.size for c, _ in held if c.origin == raw.origin), default=0)
    if held:
        witness_problem, witness_count = _check_witnessed(raw, tree, held, trusted_public_key)
        if witness_problem:
            problems.append(witness_problem)
        if witness_count:
            anchors.append(f"{witness_count} witnessed checkpoints (up to size {witnessed_size})")
    if acknowledged is not None and acknowledged.size > 0:
        stored = len(raw.entries)
        if acknowledged.size > stored:
            problems.append(Problem(
                stored,
                f"{acknowledged.source} says the witness accepted a checkpoint of "
                f"{acknowledged.size} entries, but only {stored} are present: "
                f"{_span(stored, acknowledged.size - 1)} removed together with their "
                "checkpoints (rollback)",
            ))
        anchors.append(f"the acknowledged size {acknowledged.size} ({acknowledged.source})")
    first = min(problems, key=lambda p: p.index) if problems else None
    vouched_size = max(witnessed_size, acknowledged.size if acknowledged is not None else 0)
    return VerificationResult(
        db_path=raw.path,
        origin=raw.origin,
        trusted_key_fingerprint=fingerprint(trusted_public_key),
        entries=len(raw.entries),
        checkpoints_checked=state.checked,
        consistency_proofs_checked=state.proofs,
        latest=state.latest,
        problem=first,
        witness_checkpoints_checked=witness_count,
        rollback_anchor="; ".join(anchors) or None,
        vouched_size=vouched_size,
        tree=tree,
        parsed=parsed,
    )


def _span(first: int, last: int) -> str:
    """"entry 7" or "entries 26..35" (both ends inclusive)."""
    return f"entry {first} was" if first == last else f"entries {first}..{last} were"


def _gap_reason(position: int, next_stored: int) -> str:
    """Why stored index `next_stored` follows position `position`: the exact removed range."""
    if next_stored > position:
        return (
            f"{_span(position, next_stored - 1)} removed (the next stored entry is {next_stored})"
        )
    return f"entry {position} is missing (the next stored index is {next_stored})"


def _entry_problem(position: int, data: bytes, origin: str | None) -> str | None:
    try:
        entry = AuditEntry.from_bytes(data, f"entry {position}")
    except InvalidEvent as exc:
        return str(exc)
    try:
        canonical = canonical_json(json.loads(data.decode("utf-8")))
    except ValueError:
        canonical = b""
    if canonical != data:
        return f"entry {position} is not in canonical JSON form (it was edited)"
    if entry.index != position:
        return (
            f"entry {position} says it is entry {entry.index} "
            "(entries were inserted, deleted or reordered)"
        )
    if origin is not None and entry.source != origin:
        return f"entry {position} names source {entry.source!r}, not this log's {origin!r}"
    return None


class _CheckpointWalk:
    """Checks checkpoints in signing order; remembers the first problem."""

    def __init__(self, raw: RawLog, tree: MerkleTree, trusted_key: bytes) -> None:
        self.raw = raw
        self.tree = tree
        self.trusted_key = trusted_key
        self.checked = 0
        self.proofs = 0
        self.latest: SignedCheckpoint | None = None
        self.problem: Problem | None = None
        self.proven = 0  # entries vouched for by a valid checkpoint so far
        self.prev_size = 0
        self.prev_root = EMPTY_ROOT
        self.sizes_seen: set[int] = set()

    def fail(self, index: int, reason: str) -> None:
        if self.problem is None:
            self.problem = Problem(index, reason)

    def walk(self) -> None:
        for row in self.raw.checkpoints:
            if not self._check(row):
                return
        entries = len(self.raw.entries)
        for size in range(1, entries + 1):
            if size not in self.sizes_seen:
                self.fail(
                    size - 1,
                    f"entry {size - 1} has no signed checkpoint of size {size}: it was added "
                    "without the signing key, or its checkpoint was deleted",
                )
                return

    def _check(self, row: CheckpointRow) -> bool:
        where = f"checkpoint #{row.seq}"
        try:
            cp = SignedCheckpoint(
                origin=row.origin,  # type: ignore[arg-type]
                size=row.size,  # type: ignore[arg-type]
                root_hash=row.root_hash,  # type: ignore[arg-type]
                timestamp=row.timestamp,  # type: ignore[arg-type]
                signature=_blob(row.signature),
                public_key=_blob(row.public_key),
            )
        except MalformedCheckpoint as exc:
            self.fail(self.proven, f"{where} is malformed: {exc}")
            return False
        label = f"{where} (size {cp.size}, {cp.timestamp})"
        if self.raw.origin is not None and cp.origin != self.raw.origin:
            self.fail(self.proven, f"{label} is for origin {cp.origin!r}, not {self.raw.origin!r}")
            return False
        try:
            cp.verify(self.trusted_key)
        except SignatureInvalid as exc:
            self.fail(self.proven, f"{label}: {exc}")
            return False
        if cp.size < self.prev_size:
            self.fail(
                cp.size,
                f"{label} shrinks the log from {self.prev_size} to {cp.size} entries "
                "(history was rolled back)",
            )
            return False
        entries = len(self.raw.entries)
        if cp.size > entries:
            self.fail(
                entries,
                f"{label} covers {cp.size} entries but only {entries} are present: "
                f"{_span(entries, cp.size - 1)} removed (truncated tail)",
            )
            return False
        if self.tree.root(cp.size) != cp.root:
            if cp.size > self.prev_size:
                bad = self.prev_size
                span = f"entry {bad}" if cp.size == bad + 1 else f"entries {bad}..{cp.size - 1}"
                reason = (
                    f"the stored data of {span} no longer matches the signed root "
                    "(edited, inserted, deleted or moved)"
                )
                signed = max((r.size for r in self.raw.checkpoints if isinstance(r.size, int)), default=0)
                missing = signed - entries
                if missing > 0:
                    reason += (
                        f"; the signed checkpoints cover {signed} entries but {entries} are stored, "
                        f"so {_span(bad, bad + missing - 1)} probably removed and the later ones "
                        "renumbered"
                    )
            else:
                bad = max(cp.size - 1, 0)
                reason = "it signs a different root for an already signed size (forked history)"
            self.fail(bad, f"{label}: {reason}")
            return False
        try:
            proof = self.tree.consistency_proof(self.prev_size, cp.size)
            verify_consistency(self.prev_size, cp.size, self.prev_root, cp.root, proof)
        except InvalidProof as exc:
            self.fail(self.prev_size, f"{label} is not consistent with the previous one: {exc}")
            return False
        self.proofs += 1
        self.checked += 1
        self.latest = cp
        self.prev_size, self.prev_root = cp.size, cp.root
        self.proven = cp.size
        self.sizes_seen.add(cp.size)
        return True


def _blob(value: object) -> bytes:
    return value if isinstance(value, bytes) else b""


def _with_sources(
    witnessed: list[SignedCheckpoint] | WitnessStores | None,
) -> list[tuple[SignedCheckpoint, str | None]]:
    """Each witnessed checkpoint with the store that held it (None where not given)."""
    held: list[tuple[SignedCheckpoint, str | None]] = []
    for item in witnessed or []:
        if isinstance(item, SignedCheckpoint):
            held.append((item, None))
        else:
            source, checkpoints = item
            held.extend((checkpoint, str(source)) for checkpoint in checkpoints)
    return held


def _signed_by(checkpoint: SignedCheckpoint, key: bytes) -> bool:
    """Whether `checkpoint` verifies under `key`: only such a checkpoint is evidence that a
    witness was shown the history the log holds (a forged or re-keyed one agrees by nothing)."""
    if checkpoint.public_key != key:
        return False
    try:
        checkpoint.verify(key)
    except SignatureInvalid:
        return False
    return True


def _held_by(source: str | None) -> str:
    return f" held by {source}" if source else ""


def _named(source: str | None) -> str:
    return f" {source}" if source else ""


def _check_witnessed(
    raw: RawLog, tree: MerkleTree, witnessed: list[tuple[SignedCheckpoint, str | None]], trusted_key: bytes
) -> tuple[Problem | None, int]:
    """Every checkpoint a witness accepted from this origin must match the log as stored.

    Witnessed checkpoints are checked under the key the witness enrolled (their own); if that
    is not the key this log is being verified with, the node's key was replaced. A failure
    names the store holding the contradicted checkpoint, so an officer knows which witness to
    keep as evidence.
    """
    count = 0
    matched: list[int] = []  # sizes of the witnessed checkpoints that matched, ascending
    for cp, source in sorted(witnessed, key=lambda held: held[0].size):
        if raw.origin is not None and cp.origin != raw.origin:
            continue
        label = f"witnessed checkpoint (size {cp.size}, {cp.timestamp}){_held_by(source)}"
        try:
            cp.verify()
        except SignatureInvalid as exc:
            return Problem(matched[-1] if matched else 0, f"the witness database{_named(source)} is corrupt: {exc}"), count
        if cp.public_key != trusted_key:
            return (
                Problem(
                    0,
                    f"the witness{_named(source)} holds this origin's checkpoints under key "
                    f"{cp.key_fingerprint[:16]}…, but the log verifies with "
                    f"{fingerprint(trusted_key)[:16]}… (signing key replaced)",
                ),
                count,
            )
        if cp.size > tree.size:
            return (
                Problem(
                    tree.size,
                    f"{label} covers {cp.size} entries but only {tree.size} are present: "
                    f"{_span(tree.size, cp.size - 1)} removed together with their checkpoints "
                    "(rollback)",
                ),
                count,
            )
        if tree.root(cp.size) != cp.root:
            # entries below the largest smaller size a witness vouched for are not in question
            below = max((size for size in matched if size < cp.size), default=0)
            agreeing = [(o, where) for o, where in witnessed
                        if cp.size <= o.size <= tree.size and o.origin == cp.origin and tree.root(o.size) == o.root
                        and _signed_by(o, trusted_key)]
            agreeing_stores = sorted({where for _, where in agreeing if where and where != source})
            return (
                Problem(
                    below,
                    f"{label}: entries {below}..{cp.size - 1} no longer produce the root "
                    "the witness holds (history was rewritten, possibly re-signed)"
                    + (("; another witnessed checkpoint of this or a later size matches the log"
                        + (f" ({', '.join(agreeing_stores)})" if agreeing_stores else "")
                        + ", so witnesses were shown different histories (equivocation)") if agreeing else ""),
                ),
                count,
            )
        matched.append(cp.size)
        count += 1
    return None, count
