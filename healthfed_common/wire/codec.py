"""The one place that turns messages into bytes and back.

Layout (all integers big-endian):
    b"HFED" | u16 protocol version | u32 header length | header | u32 blob count |
    (u64 length | bytes) per blob
The header is canonical JSON {"type": NAME, "fields": {...}}; bytes and numpy arrays travel
as blobs referenced from the header ({"$b": i} / {"$a": i, "dtype": .., "shape": [..]}).
Decoding accepts only registered dataclass types, exact field sets and matching field
kinds, and never unpickles anything.

Decoding is bounded because it runs on bytes from the network: the caller names the most
bytes it accepts (`max_bytes`), and the header length, blob count, nesting depth, dict
entries, string length, integer size and array shapes are capped before anything is built
from them. Each blob is referenced exactly once, so a small header cannot make the decoder
copy one large blob many times. Every failure is a `WireFormatError` whose message is fixed
text written here: no JSON, struct or Unicode exception text, and nothing of the received
bytes beyond sizes and the names of our own message types and fields.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import struct
import typing
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from healthfed_common.canonical_json import canonical_json
from healthfed_common.errors import ProtocolVersionMismatch, WireFormatError
from healthfed_common.wire.messages import MESSAGE_TYPES, PROTOCOL_VERSION

MAGIC = b"HFED"
_HEADER = struct.Struct(">4sHI")
_COUNT = struct.Struct(">I")
_LENGTH = struct.Struct(">Q")
_ALLOWED_DTYPES = {"<f4", "<f8", "<i4", "<i8", "<u4", "<u8", "|u1", "|i1", "|b1"}

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
"""The default `max_bytes` of `decode`: a ceiling for bytes this node stored itself. Network
callers pass their own, tighter bound (per gRPC method on the aggregator, per response on a silo)."""
MAX_HEADER_BYTES = 8 * 1024 * 1024
"""Headers hold ids, hashes, metrics and blob references; arrays and bytes travel as blobs."""
MAX_BLOBS = 1 << 20
MAX_DEPTH = 32
MAX_DICT_ENTRIES = 1 << 16
MAX_STRING_CHARS = 1 << 16
MAX_INT_DIGITS = 20
"""Enough for any u64/i64; Python would otherwise parse a 4,000-digit integer."""
MAX_NDIM = 32
MAX_ARRAY_ELEMENTS = 1 << 28


class MessageTooLarge(WireFormatError):
    """A message is larger than the receiver accepts for it (refused before it is parsed)."""

    code = "MESSAGE_TOO_LARGE"


class MessageRegistry:
    """The closed set of dataclasses a codec will decode."""

    def __init__(self, types: Iterable[type]) -> None:
        self._types: dict[str, type] = {}
        self.register(*types)

    def register(self, *types: type) -> None:
        for cls in types:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls!r} is not a dataclass")
            self._types[cls.__name__] = cls

    def lookup(self, name: Any) -> type:
        """The registered class called `name`; the refusal never repeats the name received."""
        cls = self._types.get(name) if isinstance(name, str) else None
        if cls is None:
            raise WireFormatError("unknown message type (not one of this protocol's messages)")
        return cls


DEFAULT_REGISTRY = MessageRegistry(MESSAGE_TYPES)


def _encode_value(value: Any, blobs: list[bytes]) -> Any:
    if isinstance(value, np.ndarray):
        array = value if value.flags.c_contiguous else value.copy(order="C")  # ascontiguousarray makes 0-d arrays 1-d
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.str not in _ALLOWED_DTYPES:
            raise WireFormatError(f"dtype {array.dtype} cannot travel on the wire")
        blobs.append(array.astype(dtype, copy=False).tobytes())
        return {"$a": len(blobs) - 1, "dtype": dtype.str, "shape": list(array.shape)}
    if isinstance(value, np.generic):
        return _encode_value(np.asarray(value), blobs)
    if isinstance(value, bytes):
        blobs.append(value)
        return {"$b": len(blobs) - 1}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "$t": type(value).__name__,
            "f": {f.name: _encode_value(getattr(value, f.name), blobs) for f in dataclasses.fields(value)},
        }
    if isinstance(value, (tuple, list)):
        return [_encode_value(item, blobs) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise WireFormatError("only str-keyed dicts can travel on the wire")
        return {"$d": {k: _encode_value(v, blobs) for k, v in value.items()}}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise WireFormatError(f"{type(value).__name__} cannot travel on the wire")


def encode(message: Any) -> bytes:
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        raise WireFormatError(f"{type(message).__name__} is not a message")
    blobs: list[bytes] = []
    header = canonical_json(_encode_value(message, blobs))
    parts = [_HEADER.pack(MAGIC, PROTOCOL_VERSION, len(header)), header, _COUNT.pack(len(blobs))]
    for blob in blobs:
        parts.append(_LENGTH.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


class _Blobs:
    """The message's blobs as views into the received bytes, each handed out at most once."""

    def __init__(self, views: list[memoryview]) -> None:
        self._views = views
        self._used: set[int] = set()

    def take(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self._views):
            raise WireFormatError("blob reference out of range")
        if index in self._used:
            raise WireFormatError("a blob is referenced more than once")
        self._used.add(index)
        return self._views[index]

    def check_all_used(self) -> None:
        if len(self._used) != len(self._views):
            raise WireFormatError("the message carries blobs its header does not reference")


def _check_string(text: str) -> None:
    if len(text) > MAX_STRING_CHARS:
        raise WireFormatError(f"a string in the header is longer than {MAX_STRING_CHARS} characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
            raise WireFormatError("a string in the header is not valid Unicode") from None


def _array(node: dict[str, Any], blobs: _Blobs) -> NDArray[Any]:
    dtype, shape = node["dtype"], node["shape"]
    if dtype not in _ALLOWED_DTYPES:
        raise WireFormatError("array with a dtype that cannot travel on the wire")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise WireFormatError(f"array shape is not a list of at most {MAX_NDIM} dimensions")
    count = 1
    for dim in shape:
        if type(dim) is not int or not 0 <= dim <= MAX_ARRAY_ELEMENTS:
            raise WireFormatError("array dimension is not an integer in 0..2^28")
        count *= dim
        if count > MAX_ARRAY_ELEMENTS:
            raise WireFormatError(f"array of more than {MAX_ARRAY_ELEMENTS} elements")
    data = blobs.take(node["$a"])
    if count * np.dtype(dtype).itemsize != len(data):
        raise WireFormatError("array blob size does not match its shape and dtype")
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()


def _decode_value(node: Any, blobs: _Blobs, registry: MessageRegistry, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireFormatError(f"message nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, str):
        _check_string(node)
        return node
    if isinstance(node, list):
        return tuple(_decode_value(item, blobs, registry, depth + 1) for item in node)
    if isinstance(node, dict):
        keys = node.keys()
        if keys == {"$a", "dtype", "shape"}:
            return _array(node, blobs)
        if keys == {"$b"}:
            return bytes(blobs.take(node["$b"]))
        if keys == {"$d"}:
            entries = node["$d"]
            if not isinstance(entries, dict):
                raise WireFormatError("dict entry of the header is not an object")
            return {k: _decode_value(v, blobs, registry, depth + 1) for k, v in entries.items()}
        if keys == {"$t", "f"}:
            return _message(node, blobs, registry, depth)
        raise WireFormatError("untagged or malformed object in message header")
    return node  # None, bool, int, float: already bounded by the JSON hooks


def _message(node: dict[str, Any], blobs: _Blobs, registry: MessageRegistry, depth: int) -> Any:
    cls = registry.lookup(node["$t"])
    fields = node["f"]
    expected = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, dict):
        raise WireFormatError(f"{cls.__name__}: fields are not an object")
    if set(fields) != expected:
        missing = sorted(expected - set(fields))  # our own field names; unexpected ones are only counted
        raise WireFormatError(
            f"{cls.__name__}: fields differ from the message definition "
            f"(missing {missing}, {len(set(fields) - expected)} unexpected)"
        )
    values = {k: _decode_value(v, blobs, registry, depth + 1) for k, v in fields.items()}
    _check_kinds(cls, values)
    try:
        return cls(**values)
    except (TypeError, ValueError):
        raise WireFormatError(f"{cls.__name__}: field values are not valid for this message") from None


_SCALARS: dict[Any, tuple[type, ...]] = {
    str: (str,),
    bytes: (bytes,),
    bool: (bool,),
    int: (int,),
    float: (float, int),
    np.ndarray: (np.ndarray,),
}


@functools.lru_cache(maxsize=256)
def _hints(cls: type) -> dict[str, Any]:
    """Resolved once per class: get_type_hints re-evaluates every annotation on each call,
    which dominated decoding messages made of many small ones (a bundle of shares)."""
    return typing.get_type_hints(cls)


def _check_kinds(cls: type, values: dict[str, Any]) -> None:
    """A shallow type check against the dataclass annotations: enough that a handler never
    receives, say, a string where it indexes an array."""
    hints = _hints(cls)
    for name, value in values.items():
        hint = hints[name]
        origin = typing.get_origin(hint) or hint
        if origin in _SCALARS:
            ok = isinstance(value, _SCALARS[origin]) and not (origin is int and isinstance(value, bool))
        elif origin is tuple:
            ok = isinstance(value, tuple)
        elif origin is dict:
            ok = isinstance(value, dict)
        else:
            ok = True  # unions and nested messages: checked by their own decoding
        if not ok:
            raise WireFormatError(f"{cls.__name__}.{name}: expected {hint}, got {type(value).__name__}")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_DICT_ENTRIES:
        raise WireFormatError(f"an object in the header has more than {MAX_DICT_ENTRIES} entries")
    result = dict(pairs)
    if len(result) != len(pairs):
        raise WireFormatError("an object in the header repeats a key")
    for key in result:
        _check_string(key)
    return result


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise WireFormatError(f"an integer in the header has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > 64:
        raise WireFormatError("a number in the header is too long")
    value = float(text)
    if not math.isfinite(value):
        raise WireFormatError("a number in the header is not finite")
    return value


def _json_constant(_name: str) -> Any:
    raise WireFormatError("NaN and infinity have no place in a message header")


def _parse_header(raw: memoryview) -> Any:
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError:
        raise WireFormatError("message header is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int,
                          parse_float=_json_float, parse_constant=_json_constant)
    except RecursionError:
        raise WireFormatError(f"message nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # JSONDecodeError and int() refusals; ours pass through
        if isinstance(error, WireFormatError):
            raise
        raise WireFormatError("message header is not valid JSON") from None


def decode(data: bytes, registry: MessageRegistry = DEFAULT_REGISTRY, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """The message in `data`, or a WireFormatError (MessageTooLarge past `max_bytes`,
    ProtocolVersionMismatch for another protocol version)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError("a message must be bytes")
    try:
        view = memoryview(data).cast("B")
    except TypeError:  # a non-contiguous or multi-dimensional buffer
        raise WireFormatError("a message must be contiguous bytes") from None
    size = len(view)
    if size > max_bytes:
        raise MessageTooLarge(f"message of {size} bytes exceeds the limit of {max_bytes} bytes")
    if size < _HEADER.size + _COUNT.size or bytes(view[:4]) != MAGIC:
        raise WireFormatError("not a HealthFed message (bad magic)")
    _, version, header_length = _HEADER.unpack_from(view)
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(
            f"peer speaks wire protocol v{version}, this node speaks v{PROTOCOL_VERSION}"
        )
    if header_length > MAX_HEADER_BYTES:
        raise WireFormatError(f"message header longer than {MAX_HEADER_BYTES} bytes")
    offset = _HEADER.size
    if offset + header_length + _COUNT.size > size:
        raise WireFormatError("truncated message (header length past the end)")
    header_bytes = view[offset : offset + header_length]
    offset += header_length
    (count,) = _COUNT.unpack_from(view, offset)
    offset += _COUNT.size
    if count > MAX_BLOBS or count * _LENGTH.size > size - offset:
        raise WireFormatError("blob count does not fit the message")
    views: list[memoryview] = []
    for _ in range(count):
        if offset + _LENGTH.size > size:
            raise WireFormatError("truncated message (blob length past the end)")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if length > size - offset:
            raise WireFormatError("truncated message (blob past the end)")
        views.append(view[offset : offset + length])
        offset += length
    if offset != size:
        raise WireFormatError(f"{size - offset} trailing bytes after message")
    header = _parse_header(header_bytes)
    if not isinstance(header, dict) or header.keys() != {"$t", "f"}:
        raise WireFormatError("message header is not a tagged object")
    blobs = _Blobs(views)
    message = _decode_value(header, blobs, registry, 0)
    blobs.check_all_used()
    return message
