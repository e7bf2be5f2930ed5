"""The wire format: round trips, a pinned golden encoding, and refusals of bad bytes."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from healthfed_common.errors import ProtocolVersionMismatch, WireFormatError
from healthfed_common.wire import codec
from healthfed_common.wire.messages import Ack, EvaluateResult, PollRequest, TrainTask


def _task() -> TrainTask:
    return TrainTask(
        task_id="t-1", plan_json=b'{"a":1}', plan_hash="ab" * 32, round=3, attempt=1, fingerprint="f" * 64,
        client_input=(np.arange(6, dtype=np.float32).reshape(2, 3), np.array(0.5, dtype=np.float32),
                      np.array([1, 2], dtype=np.int64)),
    )


def test_messages_round_trip_with_arrays_scalars_and_bytes() -> None:
    decoded = codec.decode(codec.encode(_task()))
    assert isinstance(decoded, TrainTask)
    assert decoded.plan_json == b'{"a":1}' and decoded.round == 3
    shapes = [a.shape for a in decoded.client_input]
    assert shapes == [(2, 3), (), (2,)]
    np.testing.assert_array_equal(decoded.client_input[0], _task().client_input[0])
    result = EvaluateResult("s1", "t", "h", 10, {"accuracy": 0.75})
    assert codec.decode(codec.encode(result)) == result


def test_golden_bytes_pin_the_format() -> None:
    encoded = codec.encode(PollRequest("st-marys", "0.1.0"))
    assert encoded[:4] == b"HFED" and struct.unpack(">H", encoded[4:6])[0] == 1
    assert encoded[10:].startswith(b'{"$t":"PollRequest","f":{"silo_id":"st-marys","software_version":"0.1.0"}}')
    assert hashlib.sha256(codec.encode(_task())).hexdigest() == GOLDEN_TASK_SHA256


# Pinned when protocol v1 was fixed: any change to the encoding must bump PROTOCOL_VERSION.
GOLDEN_TASK_SHA256 = "71f35b8a64103e0d4a640ec76b5955cf19d708e78460765290ec491c09e86d09"


def test_other_protocol_version_is_refused_clearly() -> None:
    encoded = bytearray(codec.encode(Ack(True)))
    encoded[4:6] = struct.pack(">H", 2)
    with pytest.raises(ProtocolVersionMismatch, match="v2"):
        codec.decode(bytes(encoded))


@pytest.mark.parametrize(
    "mutate, message, header_edit",
    [
        (lambda b: b"XXXX" + b[4:], "bad magic", False),
        (lambda b: b[:-3], "truncated|malformed|bytes for shape", False),
        (lambda b: b + b"\x00", "trailing", False),
        (lambda b: b.replace(b'"round":3', b'"round":"3"'), "expected <class 'int'>", True),
        (lambda b: b.replace(b'"attempt":1,', b""), "fields", True),
        (lambda b: b.replace(b"TrainTask", b"EvilTask1"), "unknown message type", True),
    ],
)
def test_malformed_messages_are_refused(mutate, message: str, header_edit: bool) -> None:
    encoded = codec.encode(_task())
    mutated = mutate(encoded)
    if header_edit:
        # a header edit changes its length: fix the length field so the edit itself is judged
        header_len = struct.unpack(">I", encoded[6:10])[0] + (len(mutated) - len(encoded))
        mutated = mutated[:6] + struct.pack(">I", header_len) + mutated[10:]
    with pytest.raises(WireFormatError, match=message):
        codec.decode(mutated)


def test_objects_that_are_not_messages_never_decode() -> None:
    with pytest.raises(WireFormatError):
        codec.encode({"not": "a message"})  # type: ignore[arg-type]
