"""A node's cache of traced plans: the serialized MapReduceForm graphs of each plan it built.

Why: tracing a plan costs a node 16-22 s (a fresh Python process that imports TensorFlow and
TFF and traces the learning process), and every node traces every plan on its first round.
The bytes that come out depend only on the plan, the HealthFed code that interprets it and
the TensorFlow/TFF versions, so a node keeps them in its own state folder and a restarted or
second run of the node loads them instead of tracing again.

What the cache is NOT trusted with: the security decision. A silo still compares the
fingerprint of the computation it loaded (computed from the exact bytes it will execute) with
the one the aggregator announced, as after a fresh trace. The cache is keyed by what this node
computes itself -- the plan's hash, this build's version, the TensorFlow and TFF versions --
never by anything a peer sent, and records the digest of each HealthFed source file the trace
read, checked again on load. An entry that is unreadable, truncated, edited
(its payload digest no longer matches), written for another key, traced from sources that
have changed since, or whose loaded graphs do
not give the fingerprint recorded when it was written is ignored and rebuilt by tracing.

Layout: DIR/<key>.plan, one file per plan, mode 0600 in a 0700 folder, written to a temporary
file in the same folder and renamed into place, so a crash or a second node writing the same
entry never leaves a half-written entry under the final name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from healthfed_common import __version__
from healthfed_common.errors import HealthFedError
from healthfed_common.plan import Plan

log = logging.getLogger(__name__)

FORMAT = 1
MAGIC = b"HEALTHFED-TRACED-PLAN\n"
SUFFIX = ".plan"
# a traced plan of the registry's largest model is a few MiB; anything far larger is not ours
MAX_ENTRY_BYTES = 512 * 1024 * 1024
_PACKAGE_DIR = Path(__file__).resolve().parent


class PlanCacheEntryInvalid(HealthFedError, ValueError):
    """A cache entry that cannot be used as it is (logged, then rebuilt; never a refusal)."""

    code = "PLAN_CACHE_INVALID"


def traced_sources() -> dict[str, str]:
    """sha256 of every `healthfed_common` source file this process has imported, by path
    inside the package. The tracer child calls it after tracing: the entry then records which
    of HealthFed's sources the traced graphs came from. The version number alone does not move
    when that code changes between releases (or on a developer's machine), and a stale entry
    would give this node another fingerprint than a node that traced afresh; digesting the
    whole package instead would throw entries away for edits that cannot change a graph."""
    sources: dict[str, str] = {}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not filename:
            continue
        path = Path(filename).resolve()
        if path.suffix == ".py" and _PACKAGE_DIR in path.parents:
            sources[path.relative_to(_PACKAGE_DIR).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(sources.items()))


def _sources_unchanged(recorded: object) -> bool:
    if not isinstance(recorded, dict) or not recorded:
        return False
    for relative, digest in recorded.items():
        path = (_PACKAGE_DIR / str(relative)).resolve()
        if _PACKAGE_DIR not in path.parents:
            return False
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                return False
        except OSError:
            return False
    return True


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _tensorflow_version() -> str:
    """TensorFlow's version whichever wheel provides it: the dev lock installs `tensorflow`, the
    container images its CPU-only build `tensorflow-cpu` (same package, same version). Read from
    the installed metadata, not by importing TensorFlow (`plans show` must stay fast)."""
    for distribution in ("tensorflow", "tensorflow-cpu"):
        version = _version(distribution)
        if version != "absent":
            return version
    return "absent"


def key_fields(plan: Plan) -> dict[str, str | int]:
    """Everything the traced bytes depend on, as this node sees it."""
    return {
        "format": FORMAT,
        "plan_hash": plan.plan_hash,
        "healthfed": __version__,
        "tensorflow": _tensorflow_version(),
        "tensorflow_federated": _version("tensorflow-federated"),
    }


def cache_key(plan: Plan) -> str:
    return hashlib.sha256(json.dumps(key_fields(plan), sort_keys=True).encode()).hexdigest()


def frame(blobs: dict[str, bytes]) -> bytes:
    """Named byte strings, length-prefixed: how the tracer child hands its result back and how
    a cache entry stores it."""
    parts = []
    for name, blob in blobs.items():
        key = name.encode()
        parts += [struct.pack(">I", len(key)), key, struct.pack(">Q", len(blob)), blob]
    return b"".join(parts)


def unframe(data: bytes) -> dict[str, bytes]:
    """The inverse of `frame`; ValueError for bytes that are not a whole framing."""
    blobs: dict[str, bytes] = {}
    offset = 0
    try:
        while offset < len(data):
            (key_length,) = struct.unpack_from(">I", data, offset)
            key = data[offset + 4 : offset + 4 + key_length].decode()
            offset += 4 + key_length
            (length,) = struct.unpack_from(">Q", data, offset)
            if offset + 8 + length > len(data):
                raise ValueError("a framed part runs past the end")
            blobs[key] = data[offset + 8 : offset + 8 + length]
            offset += 8 + length
    except (struct.error, UnicodeDecodeError) as error:
        raise ValueError(f"not a framed set of parts: {error}") from None
    return blobs


@dataclass(frozen=True)
class CachedPlan:
    """A verified entry: the traced parts and the fingerprint recorded when it was written
    (the caller checks that the graphs it loads from `blobs` still give it)."""

    blobs: dict[str, bytes]
    fingerprint: str
    sources: dict[str, str]


class PlanCache:
    """DIR/<key>.plan entries of one node (silo: STATE/plan-cache, aggregator:
    STATE_DIR/plan-cache)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, plan: Plan) -> Path:
        return self.directory / f"{cache_key(plan)}{SUFFIX}"

    def load(self, plan: Plan) -> CachedPlan | None:
        """The entry for this plan, or None when there is none or it cannot be trusted to be
        what this node wrote for this key (the reason is logged)."""
        path = self.path(plan)
        try:
            return self._read(path, plan)
        except FileNotFoundError:
            return None
        except (OSError, PlanCacheEntryInvalid) as error:
            log.warning("plan cache: ignoring %s (%s: %s); tracing the plan again",
                        path.name, getattr(error, "code", "PLAN_CACHE_UNREADABLE"), error)
            return None

    def _read(self, path: Path, plan: Plan) -> CachedPlan:
        with path.open("rb") as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            raise PlanCacheEntryInvalid("entry larger than any traced plan")
        if not data.startswith(MAGIC):
            raise PlanCacheEntryInvalid("not a traced-plan cache entry")
        header_end = data.find(b"\n", len(MAGIC))
        if header_end < 0:
            raise PlanCacheEntryInvalid("entry truncated in its header")
        try:
            header = json.loads(data[len(MAGIC) : header_end])
            recorded_key, digest, fingerprint = header["key"], header["sha256"], header["fingerprint"]
            sources = header["sources"]
        except (ValueError, KeyError, TypeError):
            raise PlanCacheEntryInvalid("entry header unreadable") from None
        if recorded_key != key_fields(plan):
            raise PlanCacheEntryInvalid("entry written for another plan, build or TensorFlow version")
        if not _sources_unchanged(sources):
            raise PlanCacheEntryInvalid("HealthFed code the plan was traced with has changed since")
        payload = data[header_end + 1 :]
        if hashlib.sha256(payload).hexdigest() != digest:
            raise PlanCacheEntryInvalid("entry payload does not match its digest (corrupt or edited)")
        try:
            blobs = unframe(payload)
        except ValueError as error:
            raise PlanCacheEntryInvalid(str(error)) from None
        return CachedPlan(blobs, str(fingerprint), dict(sources))

    def store(self, plan: Plan, blobs: dict[str, bytes], fingerprint: str, sources: dict[str, str]) -> Path | None:
        """Writes the entry atomically (0600 file, 0700 folder). `sources`: the tracer's
        `traced_sources()`. A cache that cannot be written (read-only or full disk) costs the
        next start a trace, nothing else: logged, None."""
        payload = frame(blobs)
        header = {"key": key_fields(plan), "sha256": hashlib.sha256(payload).hexdigest(), "fingerprint": fingerprint,
                  "sources": sources}
        path = self.path(plan)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(prefix=".writing-", suffix=SUFFIX, dir=self.directory)
            try:
                os.fchmod(descriptor, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            log.warning("plan cache: could not write %s (%s); the next start traces the plan again", path, error)
            return None
        return path

    def discard(self, plan: Plan) -> None:
        self.path(plan).unlink(missing_ok=True)
