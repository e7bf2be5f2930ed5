"""Canonical JSON: one byte string per value, so that hashes and signatures over documents
(plans, audit entries) agree across machines and Python versions."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from healthfed_common.errors import HealthFedError


class NonCanonicalValue(HealthFedError, ValueError):
    """A value that has no canonical JSON form (NaN, infinity, non-string keys...)."""


def _check(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise NonCanonicalValue(f"{path}: {value!r} has no JSON representation")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NonCanonicalValue(f"{path}: key {key!r} is not a string")
            _check(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, finite numbers only."""
    _check(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
