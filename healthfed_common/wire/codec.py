"""The one place that turns messages into bytes and back.

Layout (all integers big-endian):
    b"HFED" | u16 protocol version | u32 header length | header | u32 blob count |
    (u64 length | bytes) per blob
The header is canonical JSON {"type": NAME, "fields": {...}}; bytes and numpy arrays travel
as blobs referenced from the header ({"$b": i} / {"$a": i, "dtype": .., "shape": [..]}).
Decoding accepts only registered dataclass types, exact field sets and matching field
kinds, and never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import typing
from collections.abc import Iterable
from typing import Any

import numpy as np

from healthfed_common.canonical_json import canonical_json
from healthfed_common.errors import ProtocolVersionMismatch, WireFormatError
from healthfed_common.wire.messages import MESSAGE_TYPES, PROTOCOL_VERSION

MAGIC = b"HFED"
_HEADER = struct.Struct(">4sHI")
_ALLOWED_DTYPES = {"<f4", "<f8", "<i4", "<i8", "<u4", "<u8", "|u1", "|i1", "|b1"}
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


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

    def lookup(self, name: str) -> type:
        try:
            return self._types[name]
        except KeyError:
            raise WireFormatError(f"unknown message type {name!r}") from None


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
    parts = [_HEADER.pack(MAGIC, PROTOCOL_VERSION, len(header)), header, struct.pack(">I", len(blobs))]
    for blob in blobs:
        parts.append(struct.pack(">Q", len(blob)))
        parts.append(blob)
    return b"".join(parts)


def _decode_value(node: Any, blobs: list[bytes], registry: MessageRegistry) -> Any:
    if isinstance(node, list):
        return tuple(_decode_value(item, blobs, registry) for item in node)
    if isinstance(node, dict):
        if "$a" in node:
            index, dtype, shape = node["$a"], node.get("dtype"), node.get("shape")
            if dtype not in _ALLOWED_DTYPES or not isinstance(shape, list):
                raise WireFormatError(f"bad array descriptor {node!r}")
            data = _blob(blobs, index)
            count = int(np.prod(shape)) if shape else 1
            if count * np.dtype(dtype).itemsize != len(data):
                raise WireFormatError(f"array blob {index}: {len(data)} bytes for shape {shape} {dtype}")
            return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()
        if "$b" in node:
            return _blob(blobs, node["$b"])
        if "$d" in node:
            return {k: _decode_value(v, blobs, registry) for k, v in node["$d"].items()}
        if "$t" in node:
            cls = registry.lookup(node["$t"])
            fields = node.get("f")
            expected = {f.name for f in dataclasses.fields(cls)}
            if not isinstance(fields, dict) or set(fields) != expected:
                raise WireFormatError(f"{cls.__name__}: fields {sorted(fields or {})} != {sorted(expected)}")
            values = {k: _decode_value(v, blobs, registry) for k, v in fields.items()}
            _check_kinds(cls, values)
            return cls(**values)
        raise WireFormatError("untagged object in message header")
    return node


def _blob(blobs: list[bytes], index: Any) -> bytes:
    if not isinstance(index, int) or not 0 <= index < len(blobs):
        raise WireFormatError(f"blob reference {index!r} out of range")
    return blobs[index]


_SCALARS: dict[Any, tuple[type, ...]] = {
    str: (str,),
    bytes: (bytes,),
    bool: (bool,),
    int: (int,),
    float: (float, int),
    np.ndarray: (np.ndarray,),
}


def _check_kinds(cls: type, values: dict[str, Any]) -> None:
    """A shallow type check against the dataclass annotations: enough that a handler never
    receives, say, a string where it indexes an array."""
    hints = typing.get_type_hints(cls)
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


def decode(data: bytes, registry: MessageRegistry = DEFAULT_REGISTRY) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireFormatError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise WireFormatError("not a HealthFed message (bad magic)")
    _, version, header_length = _HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(
            f"peer speaks wire protocol v{version}, this node speaks v{PROTOCOL_VERSION}"
        )
    offset = _HEADER.size
    try:
        header = json.loads(data[offset : offset + header_length].decode("utf-8"))
        offset += header_length
        (count,) = struct.unpack_from(">I", data, offset)
        offset += 4
        blobs: list[bytes] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">Q", data, offset)
            offset += 8
            if offset + length > len(data):
                raise WireFormatError("truncated message")
            blobs.append(data[offset : offset + length])
            offset += length
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WireFormatError(f"malformed message: {error}") from None
    if offset != len(data):
        raise WireFormatError(f"{len(data) - offset} trailing bytes after message")
    if not isinstance(header, dict) or "$t" not in header:
        raise WireFormatError("message header is not a tagged object")
    return _decode_value(header, blobs, registry)
