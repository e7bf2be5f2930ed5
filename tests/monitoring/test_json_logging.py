"""`configure_logging`: one parseable JSON object per line, extra fields kept as values."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from healthfed_common.json_logging import configure_logging


@pytest.fixture()
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_role_fields_and_exceptions(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(True, "silo st-marys", stream=stream)
    log = logging.getLogger("healthfed.silo")
    log.info("refusing %s", "task-7", extra={"code": "FEATURE_NOT_ALLOWED", "round": 3, "odd": {1, 2}})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("task failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "refusing task-7"
    assert first["level"] == "INFO" and first["role"] == "silo st-marys" and first["logger"] == "healthfed.silo"
    assert first["code"] == "FEATURE_NOT_ALLOWED" and first["round"] == 3
    assert first["odd"] == repr({1, 2})
    assert first["time"].endswith("+00:00")
    assert second["exception_type"] == "ValueError" and "Traceback" in second["exception"]


def test_text_format_and_single_handler(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(False, "aggregator", stream=stream, level=logging.WARNING)
    configure_logging(False, "aggregator", stream=stream, level=logging.WARNING)  # idempotent
    logging.getLogger("healthfed.aggregator").warning("round %d re-offered", 2)
    logging.getLogger("healthfed.aggregator").info("not shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert " aggregator WARNING healthfed.aggregator round 2 re-offered" in lines[0]
