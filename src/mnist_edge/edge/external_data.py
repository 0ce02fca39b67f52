"""How many bytes of external data an ONNX file makes ONNX Runtime read, told before it reads any.

A tensor may keep its values in another file (`external_data`: location, offset, length), which ONNX Runtime
loads with the model: a small .onnx beside a huge file would pass a limit on the .onnx alone. The onnx package
is not a base dependency, so the file's protobuf is walked here, by its wire format, along the paths where a
tensor can sit (initializers, Constant attributes, subgraphs, functions); everything else (weights, names) is
skipped unread.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

# Message -> {field number: message type of that field}, from onnx.proto; a field not listed is skipped.
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
}
_EXTERNAL_DATA = 13  # TensorProto.external_data: key/value entries (StringStringEntryProto: key 1, value 2)
_MAX_DEPTH = 64  # subgraphs nest; a crafted file nesting deeper is refused by ONNX Runtime itself


class Malformed(ValueError):
    """Not a protobuf message: ONNX Runtime says what is wrong when it loads it."""


def external_bytes(model: Path) -> int:
    """The bytes of external data the ONNX file MODEL's tensors ask to be loaded: each one's declared length, or
    the rest of its file from its offset. Files that do not exist count nothing (loading fails on them anyway);
    0 for a file that is not a well-formed protobuf."""
    with open(model, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(b"location") < 0:  # every external tensor names its file under this key: most models have none
                return 0
            view = memoryview(data)
            try:
                return sum(_tensor_bytes(model.parent, entries) for entries in _external_entries(view, "model", 0))
            except Malformed:
                return 0
            finally:
                view.release()


def _tensor_bytes(folder: Path, entries: dict[str, str]) -> int:
    if not entries.get("location"):
        return 0
    try:
        size = os.stat(folder / entries["location"]).st_size
    except (OSError, ValueError):
        return 0
    offset, length = _count(entries.get("offset", "0")), _count(entries.get("length", ""))
    return length if length is not None else max(0, size - (offset or 0))


def _count(text: str) -> int | None:
    """A byte count as the file writes it, or None; more than 20 digits counts as 2^64, over any limit."""
    if not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 20 else 1 << 64


def _external_entries(data: memoryview, kind: str, depth: int) -> Iterator[dict[str, str]]:
    """The external-data entries of each tensor in the message DATA of type KIND."""
    if depth > _MAX_DEPTH:
        raise Malformed("nested too deeply")
    fields = _SCHEMA[kind]
    entries: dict[str, str] = {}
    for number, value in _length_delimited(data):
        if number not in fields:
            continue
        if kind == "tensor" and number == _EXTERNAL_DATA:
            pair = {n: bytes(v).decode("utf-8", "replace") for n, v in _length_delimited(value)}
            entries[pair.get(1, "")] = pair.get(2, "")
        else:
            yield from _external_entries(value, fields[number], depth + 1)
    if entries:
        yield entries


def _length_delimited(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(field number, bytes) of each length-delimited field of the message DATA; other fields are skipped."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise Malformed("a field runs past the end")
            yield key >> 3, data[pos : pos + size]
            pos += size
        else:
            raise Malformed(f"wire type {wire}")
    if pos > len(data):
        raise Malformed("a field runs past the end")


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise Malformed("a truncated varint")
