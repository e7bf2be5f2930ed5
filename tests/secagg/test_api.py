"""Pins the public API the round code is wired to, the error tree, the message field types a
generic codec can carry, and the import rules (no TensorFlow, no role packages, client and
server independent)."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import typing

import numpy as np

import healthfed_common.secagg as secagg
from healthfed_common.errors import HealthFedError
from healthfed_common.secagg import messages

PACKAGE = pathlib.Path(secagg.__file__).parent


def test_public_names() -> None:
    assert sorted(secagg.__all__) == sorted([
        "PROTOCOL_NAME", "AuthenticationFailed", "CommitmentMismatch", "ConsistencyFailed",
        "ConsistencySignature", "Equivocation", "EncryptedShare", "InvalidInput",
        "InvalidParameters", "KeyAdvertisement", "KeyRoster", "MaskedInput", "PhaseOrderError",
        "ProtocolViolation", "SecAggClient", "SecAggError", "SecAggServer", "SessionParams",
        "ShareInbox", "ShareRequestRefused", "TooFewSurvivors", "UnmaskRequest", "UnmaskResponse",
        "GraphChoice", "GraphRequirement", "GraphTooSparse", "choose_graph", "default_threshold",
    ])
    for name in ("advertise_keys", "share_keys", "masked_input", "unmask"):
        assert callable(getattr(secagg.SecAggClient, name))
    for name in ("receive_advertisement", "roster", "receive_shares", "inbox_for",
                 "receive_masked_input", "unmask_request", "receive_unmask_response", "finish"):
        assert callable(getattr(secagg.SecAggServer, name))


def test_error_tree() -> None:
    expected = {
        "TooFewSurvivors": (RuntimeError, "SECAGG_TOO_FEW_SURVIVORS"),
        "ProtocolViolation": (ValueError, "SECAGG_PROTOCOL_VIOLATION"),
        "AuthenticationFailed": (ValueError, "SECAGG_AUTHENTICATION_FAILED"),
        "ShareRequestRefused": (PermissionError, "SECAGG_SHARE_REQUEST_REFUSED"),
        "InvalidParameters": (ValueError, "SECAGG_INVALID_PARAMETERS"),
        "InvalidInput": (ValueError, "SECAGG_INVALID_INPUT"),
        "PhaseOrderError": (RuntimeError, "SECAGG_PHASE_ORDER"),
    }
    assert issubclass(secagg.SecAggError, HealthFedError)
    codes = set()
    for name, (builtin, code) in expected.items():
        cls = getattr(secagg, name)
        assert issubclass(cls, secagg.SecAggError) and issubclass(cls, builtin)
        assert cls.code == code
        codes.add(code)
    assert len(codes) == len(expected)


ALLOWED = {int, str, bytes, bool}


def _allowed(tp: object) -> bool:
    if tp in ALLOWED:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and (args[0] in ALLOWED or typing.get_origin(args[0]) is np.ndarray)
    if origin is dict:
        return args == (str, bytes)
    return False


def test_message_fields_are_codec_friendly() -> None:
    classes = [getattr(messages, n) for n in dir(messages) if dataclasses.is_dataclass(getattr(messages, n))]
    assert len(classes) == 8
    for cls in classes:
        assert cls.__dataclass_params__.frozen
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert _allowed(hints[f.name]), (cls.__name__, f.name, hints[f.name])


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_numpy_random() -> None:
    """Masks and shares come from a cryptographic PRG, never numpy.random. (No TensorFlow, no
    role package, no `random`, client and server independent: import-linter contracts in
    pyproject.toml, checked by tests/core/test_architecture.py, direct and indirect imports.)"""
    for path in PACKAGE.glob("*.py"):
        for name in _imports(path):
            assert not name.startswith("numpy.random"), (path.name, name)


def test_modules_stay_small() -> None:
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) < 400, path.name
