"""The wire format: round trips, a pinned golden encoding, and refusals of bad bytes: hostile
envelopes one by one (each refused in the codec's own words) and fuzzing (random bytes,
mutated messages, random headers: nothing but WireFormatError ever comes out)."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthfed_common.errors import ProtocolVersionMismatch, WireFormatError
from healthfed_common.wire import codec
from healthfed_common.wire.messages import PROTOCOL_VERSION, Ack, EvaluateResult, PollRequest, TrainTask


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
    assert encoded[:4] == b"HFED" and struct.unpack(">H", encoded[4:6])[0] == 2
    assert encoded[10:].startswith(b'{"$t":"PollRequest","f":{"silo_id":"st-marys","software_version":"0.1.0"}}')
    assert hashlib.sha256(codec.encode(_task())).hexdigest() == GOLDEN_TASK_SHA256


# Pinned when protocol v2 was fixed (v1's was 71f35b8a…; only the version field differs): any
# change to the encoding must bump PROTOCOL_VERSION.
GOLDEN_TASK_SHA256 = "0ced1b4fa72c10dd005bb6ca5af3c4a40038c420599226a2ddd17c28c1396104"


def test_other_protocol_version_is_refused_clearly() -> None:
    encoded = bytearray(codec.encode(Ack(True)))
    encoded[4:6] = struct.pack(">H", PROTOCOL_VERSION + 1)
    with pytest.raises(ProtocolVersionMismatch, match=f"v{PROTOCOL_VERSION + 1}"):
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


# -- hostile envelopes: each refused with a WireFormatError whose text is the codec's own ------------

_PYTHON_TEXT = ("Expecting", "line 1 column", "codec can't decode", "invalid start byte", "unpack",
                "Traceback", "Error(", "object has no attribute", "unhashable", "not subscriptable")


def _envelope(header: bytes, blobs: tuple[bytes, ...] = (), *, header_length: int | None = None,
              blob_count: int | None = None) -> bytes:
    """A raw envelope, so a test can put anything in each field the encoder would never write."""
    parts = [b"HFED", struct.pack(">HI", PROTOCOL_VERSION, len(header) if header_length is None else header_length), header,
             struct.pack(">I", len(blobs) if blob_count is None else blob_count)]
    for blob in blobs:
        parts += [struct.pack(">Q", len(blob)), blob]
    return b"".join(parts)


def _poll_header(**fields: object) -> bytes:
    body = {"silo_id": "alpha", "software_version": "1"} | fields
    return json.dumps({"$t": "PollRequest", "f": body}).encode()


def _array_message(shape: object, blob: bytes, dtype: str = "<f4") -> bytes:
    header = json.dumps({"$t": "TrainTask", "f": {
        "task_id": "t", "plan_json": {"$b": 0}, "plan_hash": "h", "round": 1, "attempt": 1, "fingerprint": "f",
        "client_input": [{"$a": 1, "dtype": dtype, "shape": shape}], "secagg": None}}).encode()
    return _envelope(header, (b"{}", blob))


def _nested(depth: int) -> bytes:
    header = _poll_header(software_version="[" * depth + "]" * depth).replace(b'"[', b"[").replace(b']"', b"]")
    return _envelope(header)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "bad magic": (b"XXXX" + codec.encode(Ack(True))[4:], "bad magic"),
    "empty": (b"", "bad magic"),
    "huge header length": (_envelope(_poll_header(), header_length=0xFFFFFFFF), "header longer than"),
    "header length past the end": (_envelope(_poll_header(), header_length=4096), "header length past the end"),
    "huge blob count": (_envelope(_poll_header(), blob_count=0xFFFFFFFF), "blob count"),
    "blob length past the end": (
        _envelope(_poll_header(), blob_count=1) + struct.pack(">Q", 2**63) + b"abc", "blob past the end"),
    "deep nesting (parser)": (_nested(100_000), "nested deeper"),
    "deep nesting (decoder)": (_nested(40), "nested deeper"),
    "10^9-element shape": (_array_message([1000, 1000, 1000], b"\0" * 16), "more than 268435456 elements"),
    "negative dimension": (_array_message([-1, 4], b"\0" * 16), "dimension"),
    "boolean dimension": (_array_message([True], b"\0" * 4), "dimension"),
    "shape not a list": (_array_message("4", b"\0" * 16), "shape"),
    "too many dimensions": (_array_message([1] * 64, b"\0" * 4), "dimensions"),
    "blob size off": (_array_message([3], b"\0" * 16), "does not match"),
    "pickle dtype": (_array_message([1], b"\0" * 8, dtype="|O"), "dtype"),
    "non-UTF-8 header": (_envelope(b'{"$t":"PollRequest","f":{"silo_id":"\xff\xfe"}}'), "not UTF-8"),
    "not JSON": (_envelope(b"{not json"), "not valid JSON"),
    "JSON array header": (_envelope(b"[]"), "not a tagged object"),
    "unknown type": (_envelope(json.dumps({"$t": "EvilTask1", "f": {}}).encode()), "unknown message type"),
    "type name not a string": (_envelope(b'{"$t":["x"],"f":{}}'), "unknown message type"),
    "extra field": (_envelope(_poll_header(is_admin=True)), "1 unexpected"),
    "missing field": (_envelope(b'{"$t":"PollRequest","f":{"silo_id":"a"}}'), "missing ['software_version']"),
    "extra key beside the tag": (_envelope(b'{"$t":"PollRequest","f":{"silo_id":"a","software_version":"1"},"x":1}'),
                                 "not a tagged object"),
    "NaN": (_envelope(b'{"$t":"EvaluateResult","f":{"silo_id":"a","task_id":"t","plan_hash":"h",'
                      b'"num_examples":1,"metrics":{"$d":{"auc":NaN}}}}'), "NaN"),
    "infinite float": (_envelope(b'{"$t":"Wait","f":{"retry_after_s":1e999,"reason":"r"}}'), "not finite"),
    "5000-digit integer": (_envelope(b'{"$t":"Wait","f":{"retry_after_s":' + b"9" * 5000 + b',"reason":"r"}}'),
                           "more than 20 digits"),
    "repeated key": (_envelope(b'{"$t":"PollRequest","f":{"silo_id":"a","silo_id":"b","software_version":"1"}}'),
                     "repeats a key"),
    "long string": (_envelope(_poll_header(silo_id="a" * 70_000)), "longer than 65536"),
    "lone surrogate": (_envelope(b'{"$t":"PollRequest","f":{"silo_id":"\\ud800","software_version":"1"}}'),
                       "not valid Unicode"),
    "blob referenced twice": (_envelope(b'{"$t":"SecAggSession","f":{"session_id":{"$b":0},"participants":'
                                        b'[{"$b":0}],"threshold":2,"bitwidths":[],"vector_lengths":[],'
                                        b'"neighbours":0}}', (b"x",)), "more than once"),
    "unreferenced blob": (_envelope(_poll_header(), (b"smuggled",)), "does not reference"),
    "blob index out of range": (_array_message([1], b"\0" * 4).replace(b'"$a": 1', b'"$a": 7'), "out of range"),
    "untagged object": (_envelope(_poll_header(silo_id={"a": 1})), "untagged"),
    "wrong kind": (_envelope(_poll_header(silo_id=3)), "PollRequest.silo_id: expected"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_envelopes_are_refused_with_our_own_words(name: str) -> None:
    data, expected = HOSTILE[name]
    with pytest.raises(WireFormatError) as caught:
        codec.decode(data)
    text = str(caught.value)
    assert expected in text, text
    assert caught.value.code in ("WIRE_FORMAT", "MESSAGE_TOO_LARGE", "PROTOCOL_VERSION")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__ or caught.value.__context__ is None
    assert not any(fragment in text for fragment in _PYTHON_TEXT), text
    assert "EvilTask1" not in text and "is_admin" not in text, "attacker bytes are not echoed"
    assert len(text) < 200


def test_a_message_over_the_callers_limit_is_refused_before_parsing() -> None:
    encoded = codec.encode(_task())
    with pytest.raises(codec.MessageTooLarge) as caught:
        codec.decode(encoded, max_bytes=len(encoded) - 1)
    assert caught.value.code == "MESSAGE_TOO_LARGE"
    # the limit is checked first: garbage of that size is refused for its size, not its content
    with pytest.raises(codec.MessageTooLarge):
        codec.decode(b"\xff" * 100, max_bytes=99)
    assert isinstance(codec.decode(encoded, max_bytes=len(encoded)), TrainTask)


def test_input_that_is_not_bytes_is_refused() -> None:
    with pytest.raises(WireFormatError, match="must be bytes"):
        codec.decode("HFED")  # type: ignore[arg-type]


def test_a_legitimate_large_array_still_decodes() -> None:
    weights = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)
    decoded = codec.decode(codec.encode(replace(_task(), client_input=(weights,))))
    np.testing.assert_array_equal(decoded.client_input[0], weights)


# -- fuzzing: whatever the bytes, decode returns a message or raises WireFormatError --------------

_SEEDS = [codec.encode(_task()), codec.encode(PollRequest("st-marys", "0.1.0")),
          codec.encode(EvaluateResult("s1", "t", "h", 10, {"accuracy": 0.75}))]


def _decode_or_wire_error(data: bytes) -> None:
    try:
        codec.decode(data, max_bytes=1 << 20)
    except WireFormatError as error:
        assert not any(fragment in str(error) for fragment in _PYTHON_TEXT), str(error)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_wire_format_errors(data: bytes) -> None:
    _decode_or_wire_error(data)
    _decode_or_wire_error(b"HFED" + struct.pack(">H", PROTOCOL_VERSION) + data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.integers(0, 10_000))
def test_mutated_messages_only_ever_raise_wire_format_errors(seed: bytes, flips: list[tuple[int, int]],
                                                             cut: int) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    _decode_or_wire_error(bytes(data))
    _decode_or_wire_error(bytes(data[: len(data) - cut % len(data)]))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["$t", "f", "$a", "$b", "$d", "dtype", "shape", "silo_id", "software_version", "x"]) | st.text(max_size=5),
        children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["PollRequest", "TrainTask", "SecAggReply", "SharesBundle", "Ack"]), _JSON,
       st.lists(st.binary(max_size=16), max_size=3))
def test_random_headers_only_ever_raise_wire_format_errors(name: str, fields: object, blobs: list[bytes]) -> None:
    header = json.dumps({"$t": name, "f": fields}).encode()
    _decode_or_wire_error(_envelope(header, tuple(blobs)))
