"""The traced-plan cache (issue 17, item 4): a second build loads what the first traced, without
a tracer process and with the same fingerprint; an entry that was edited, truncated, written
for another key or cannot be read is never used, and the plan is traced again.

The PlanCache tests use made-up parts and need no TensorFlow; the build tests trace the toy
plan for real (one fresh tracer process each time a trace is counted)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from healthfed_common import learning_process, plan_cache
from healthfed_common.plan import parse_plan
from healthfed_common.plan_cache import MAGIC, PlanCache, cache_key, key_fields
from tests.federation.conftest import toy_plan

PLAN = parse_plan(toy_plan(rounds=2))
OTHER = parse_plan(toy_plan(rounds=3))
PARTS = {"work": b"\x00graph bytes\xff" * 50, "facts": b'{"has_max_input_sums": false}'}
PACKAGE = Path(plan_cache.__file__).resolve().parent
SOURCES = {"learning_process.py": hashlib.sha256((PACKAGE / "learning_process.py").read_bytes()).hexdigest()}


def _payload_offset(data: bytes) -> int:
    return data.index(b"\n", len(MAGIC)) + 1


# -- the entry format, without TensorFlow ------------------------------------------------
def test_an_entry_round_trips_as_a_private_file_written_atomically(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path / "plan-cache")
    path = cache.store(PLAN, PARTS, "f" * 64, SOURCES)
    assert path == cache.path(PLAN) and path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    assert [p.name for p in cache.directory.iterdir()] == [path.name]  # no temporary file left behind
    loaded = cache.load(PLAN)
    assert loaded is not None and loaded.blobs == PARTS and loaded.fingerprint == "f" * 64


def test_the_key_changes_with_the_plan_hash_and_the_tensorflow_version(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_key(PLAN) != cache_key(OTHER)
    assert key_fields(PLAN)["plan_hash"] == PLAN.plan_hash
    fields = key_fields(PLAN)
    assert fields["tensorflow"] not in ("", "absent") and fields["tensorflow_federated"] not in ("", "absent")
    before = cache_key(PLAN)
    monkeypatch.setattr(plan_cache, "_version", lambda distribution: "9.9.9")
    assert cache_key(PLAN) != before


@pytest.mark.parametrize("sources", [
    {"learning_process.py": "0" * 64},  # the code the plan was traced with has changed since
    {"../../outside.py": "0" * 64},  # only the package's own files count
    {},  # no provenance
])
def test_an_entry_traced_from_other_sources_is_ignored(tmp_path: Path, sources: dict[str, str]) -> None:
    cache = PlanCache(tmp_path)
    assert cache.store(PLAN, PARTS, "f" * 64, sources) is not None
    assert cache.load(PLAN) is None


def test_the_tracer_records_the_package_sources_it_read() -> None:
    recorded = plan_cache.traced_sources()
    assert recorded["plan_cache.py"] == hashlib.sha256((PACKAGE / "plan_cache.py").read_bytes()).hexdigest()
    assert all(not name.startswith(("/", "..")) for name in recorded)


def test_an_entry_edited_in_its_payload_is_ignored(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path)
    path = cache.store(PLAN, PARTS, "f" * 64, SOURCES)
    assert path is not None
    data = bytearray(path.read_bytes())
    data[_payload_offset(bytes(data)) + 20] ^= 0x01  # one bit of a graph
    path.write_bytes(bytes(data))
    assert cache.load(PLAN) is None


def test_an_entry_for_another_plan_put_under_this_plans_name_is_ignored(tmp_path: Path) -> None:
    cache = PlanCache(tmp_path)
    other = cache.store(OTHER, PARTS, "f" * 64, SOURCES)
    assert other is not None
    os.replace(other, cache.path(PLAN))  # a consistent entry, but written for another key
    assert cache.load(PLAN) is None


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "header", "folder"])
def test_a_damaged_entry_is_ignored(tmp_path: Path, damage: str) -> None:
    cache = PlanCache(tmp_path)
    path = cache.store(PLAN, PARTS, "f" * 64, SOURCES)
    assert path is not None
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-7])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "header":
        path.write_bytes(MAGIC + b"{not json\n" + data[_payload_offset(data):])
    else:
        path.unlink()
        path.mkdir()
    assert cache.load(PLAN) is None


def test_an_unwritable_cache_costs_a_trace_not_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "plan-cache"
    blocker.write_text("a file where the folder should be")
    assert PlanCache(blocker).store(PLAN, PARTS, "f" * 64, SOURCES) is None


# -- real builds -----------------------------------------------------------------------
@pytest.fixture()
def traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the traces `build_federated_computations` asks for. The first trace of a plan
    runs the real tracer process; a repeated one is answered with the bytes that process gave
    (a fresh tracer gives the same bytes for the same plan: tests/core/test_learning_process.py),
    which saves ~10 s of TensorFlow start-up per rebuild and leaves what is tested here -- when
    the cache asks for a trace, and what it does with the answer -- unchanged."""
    started: list[str] = []
    traced: dict[str, dict[str, bytes]] = {}
    real = learning_process.trace_in_fresh_process

    def counted(plan):  # type: ignore[no-untyped-def]
        started.append(plan.plan_hash)
        if plan.plan_hash not in traced:
            traced[plan.plan_hash] = real(plan)
        return dict(traced[plan.plan_hash])

    monkeypatch.setattr(learning_process, "trace_in_fresh_process", counted)
    learning_process.build_federated_computations.cache_clear()  # this process's memo, not the disk cache
    yield started
    learning_process.build_federated_computations.cache_clear()


def test_a_second_build_loads_the_cache_without_a_tracer_and_with_the_same_fingerprint(
    tmp_path: Path, traces: list[str]
) -> None:
    cache_dir = tmp_path / "plan-cache"
    first = learning_process.build_federated_computations(PLAN, cache_dir)
    assert traces == [PLAN.plan_hash]
    entry = PlanCache(cache_dir).path(PLAN)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    recorded = PlanCache(cache_dir).load(PLAN)
    assert recorded is not None and {"learning_process.py", "models.py", "plan.py"} <= set(recorded.sources)
    learning_process.build_federated_computations.cache_clear()  # as after a restart
    second = learning_process.build_federated_computations(PLAN, cache_dir)
    assert traces == [PLAN.plan_hash]  # no tracer process this time
    assert second.fingerprint == first.fingerprint
    assert second.secure_sum_bitwidths == first.secure_sum_bitwidths
    state = second.initialize()
    assert [a.shape for a in state] == [a.shape for a in first.initialize()]

    # A tampered entry is detected and rebuilt: one graph byte changed, digest left alone.
    data = bytearray(entry.read_bytes())
    data[len(data) - 100] ^= 0xFF
    entry.write_bytes(bytes(data))
    learning_process.build_federated_computations.cache_clear()
    third = learning_process.build_federated_computations(PLAN, cache_dir)
    assert traces == [PLAN.plan_hash, PLAN.plan_hash]
    assert third.fingerprint == first.fingerprint
    assert PlanCache(cache_dir).load(PLAN) is not None  # rewritten whole

    # ... and so is one edited with its digest recomputed: what it loads is not what was recorded.
    data = bytearray(entry.read_bytes())
    offset = _payload_offset(bytes(data))
    header = json.loads(data[len(MAGIC) : offset - 1])
    payload = bytearray(data[offset:])
    needle = payload.find(b"client_update")
    assert needle > 0
    payload[needle] = ord("C")  # a node name in a graph: still a valid proto, another graph
    header["sha256"] = hashlib.sha256(bytes(payload)).hexdigest()
    entry.write_bytes(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + bytes(payload))
    learning_process.build_federated_computations.cache_clear()
    fourth = learning_process.build_federated_computations(PLAN, cache_dir)
    assert traces == [PLAN.plan_hash] * 3
    assert fourth.fingerprint == first.fingerprint


def test_the_cpu_only_tensorflow_wheel_of_the_images_is_keyed_by_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """The images install `tensorflow-cpu`, not `tensorflow`: an entry written under one
    TensorFlow version must not be loaded under another there either (the key once read
    "absent" for every version in the images)."""
    installed = {"tensorflow-cpu": "2.14.1", "tensorflow-federated": "0.87.0"}

    def version(distribution: str) -> str:
        if distribution not in installed:
            raise plan_cache.importlib.metadata.PackageNotFoundError(distribution)
        return installed[distribution]

    monkeypatch.setattr(plan_cache.importlib.metadata, "version", version)
    assert key_fields(PLAN)["tensorflow"] == "2.14.1"
    before = cache_key(PLAN)
    installed["tensorflow-cpu"] = "2.14.2"
    assert cache_key(PLAN) != before
