"""What the traced-plan cache tells the operator when it throws an entry away (issue 17: every
code named by a test). An entry is never a refusal: it is ignored and the plan traced again,
but the node's log says which entry, why, and under which registered code --
PLAN_CACHE_INVALID for an entry that is not what this node wrote for this key,
PLAN_CACHE_UNREADABLE for one the file system will not let it read -- and the entry found is
left as it is (the next store replaces it whole). No TensorFlow: made-up parts, real files."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from healthfed_common import plan_cache
from healthfed_common.error_codes import ErrorCode
from healthfed_common.plan import parse_plan
from healthfed_common.plan_cache import MAGIC, PlanCache, PlanCacheEntryInvalid
from tests.federation.conftest import toy_plan

PLAN = parse_plan(toy_plan(rounds=2))
OTHER = parse_plan(toy_plan(rounds=3))
PARTS = {"work": b"\x00graph bytes\xff" * 50, "facts": b'{"has_max_input_sums": false}'}
PACKAGE = Path(plan_cache.__file__).resolve().parent
SOURCES = {"learning_process.py": hashlib.sha256((PACKAGE / "learning_process.py").read_bytes()).hexdigest()}


def _ignored(caplog: pytest.LogCaptureFixture, cache: PlanCache) -> str:
    """Loads the plan's entry, which must be ignored, and returns the one warning that says so."""
    with caplog.at_level(logging.WARNING, logger=plan_cache.__name__):
        assert cache.load(PLAN) is None
    warnings = [r.getMessage() for r in caplog.records if r.name == plan_cache.__name__]
    assert len(warnings) == 1, warnings
    assert cache.path(PLAN).name in warnings[0] and "tracing the plan again" in warnings[0]
    return warnings[0]


@pytest.mark.parametrize("damage,reason", [
    ("payload", "entry payload does not match its digest"),
    ("other_key", "entry written for another plan, build or TensorFlow version"),
    ("not_an_entry", "not a traced-plan cache entry"),
    ("header", "entry header unreadable"),
    ("sources", "HealthFed code the plan was traced with has changed since"),
])
def test_an_entry_that_is_not_what_this_node_wrote_is_logged_plan_cache_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, reason: str
) -> None:
    cache = PlanCache(tmp_path / "plan-cache")
    path = cache.store(OTHER if damage == "other_key" else PLAN, PARTS, "f" * 64,
                       {"learning_process.py": "0" * 64} if damage == "sources" else SOURCES)
    assert path is not None
    if damage == "other_key":
        path = path.rename(cache.path(PLAN))  # a consistent entry, under this plan's name
    data = path.read_bytes()
    if damage == "payload":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))
    elif damage == "not_an_entry":
        path.write_bytes(b"PK\x03\x04" + data[4:])
    elif damage == "header":
        path.write_bytes(MAGIC + b"{not json\n" + data[data.index(b"\n", len(MAGIC)) + 1:])
    damaged = path.read_bytes()
    message = _ignored(caplog, cache)
    assert f"({ErrorCode.PLAN_CACHE_INVALID}: {reason}" in message
    assert PlanCacheEntryInvalid.code == ErrorCode.PLAN_CACHE_INVALID
    assert path.read_bytes() == damaged  # left for the next store to replace whole


def test_an_entry_the_file_system_will_not_read_is_logged_plan_cache_unreadable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where the entry's file belongs (an operator's restore gone wrong) cannot be
    opened for reading: an OSError, not a damaged entry."""
    cache = PlanCache(tmp_path / "plan-cache")
    cache.path(PLAN).mkdir(parents=True)
    message = _ignored(caplog, cache)
    assert f"({ErrorCode.PLAN_CACHE_UNREADABLE}: " in message
    assert ErrorCode.PLAN_CACHE_INVALID not in message
    assert cache.path(PLAN).is_dir()
