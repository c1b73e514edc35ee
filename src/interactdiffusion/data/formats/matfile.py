"""A small, fast reader for the MATLAB v5 files HICO-DET ships, returning what
``scipy.io.loadmat(path, simplify_cells=True)`` returns.

``anno_bbox.mat`` is a deep tree of tiny struct arrays (some 1.7 million elements for the training split);
scipy builds a numpy object for every one of them and needs tens of seconds. This reader walks the byte
stream once with ``struct`` and builds plain dicts, lists, strings and numbers directly, with a one-call
fast path for the 1×1 doubles that make up most of the file. It covers what the file uses (structs,
cells, char and numeric/logical arrays, compressed or not, little-endian); anything else raises
``UnsupportedMat`` and the caller falls back to scipy, which stays the reference (the tests compare both).

The simplified shapes match scipy's: a 1×1 struct is a dict, an empty one an empty array, a longer one a
list of dicts; numeric arrays are squeezed (1×1 → a Python number); char arrays are strings.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32, MI_SINGLE, MI_DOUBLE = 1, 2, 3, 4, 5, 6, 7, 9
MI_INT64, MI_UINT64, MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 12, 13, 14, 15, 16, 17, 18
MX_CELL, MX_STRUCT, MX_CHAR = 1, 2, 4
_STORAGE = {MI_INT8: "<i1", MI_UINT8: "<u1", MI_INT16: "<i2", MI_UINT16: "<u2", MI_INT32: "<i4",
            MI_UINT32: "<u4", MI_SINGLE: "<f4", MI_DOUBLE: "<f8", MI_INT64: "<i8", MI_UINT64: "<u8"}
_CLASS = {6: np.float64, 7: np.float32, 8: np.int8, 9: np.uint8, 10: np.int16, 11: np.uint16, 12: np.int32,
          13: np.uint32, 14: np.int64, 15: np.uint64}
_TAG = struct.Struct("<II").unpack_from
_SCALAR = {k: struct.Struct(v.replace("i1", "b").replace("u1", "B").replace("i2", "h").replace("u2", "H")
                            .replace("i4", "i").replace("u4", "I").replace("f4", "f").replace("f8", "d")
                            .replace("i8", "q").replace("u8", "Q")).unpack_from for k, v in _STORAGE.items()}
# A 1×1 double with an empty name, as scipy and MATLAB write it uncompressed: 56 bytes of content.
_DOUBLE_SCALAR = struct.Struct("<14Id").unpack_from
_DOUBLE_SCALAR_HEAD = (MI_MATRIX, 56, MI_UINT32, 8, 6, 0, MI_INT32, 8, 1, 1, MI_INT8, 0, MI_DOUBLE, 8)
# Array flags, 2-D dimensions and an empty name in their full-size form: the header of most elements.
_HEADER_2D = struct.Struct("<6I2i2I").unpack_from


_FIELD_NAMES: dict[bytes, list[str]] = {}  # the same few field lists repeat 100,000s of times


class UnsupportedMat(ValueError):
    """A MAT feature this reader does not handle (use scipy instead)."""


def _tag(buf, pos: int) -> tuple[int, int, int, int]:
    """(type, byte count, data start, next element) of the data element at ``pos``."""
    mdtype, nbytes = _TAG(buf, pos)
    if mdtype >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
        return mdtype & 0xFFFF, mdtype >> 16, pos + 4, pos + 8
    return mdtype, nbytes, pos + 8, pos + 8 + ((nbytes + 7) & ~7)


def _element(buf, pos: int):
    """The miMATRIX element at ``pos`` (its tag included) and the position after it."""
    head = _DOUBLE_SCALAR(buf, pos) if len(buf) - pos >= 64 else None
    if head is not None and head[:14] == _DOUBLE_SCALAR_HEAD:
        return head[14], pos + 64
    mdtype, nbytes, start, after = _tag(buf, pos)
    if mdtype != MI_MATRIX:
        raise UnsupportedMat(f"expected a matrix element, found type {mdtype}")
    return _matrix(buf, start, start + nbytes), after


def _matrix(buf, pos: int, end: int):
    if pos >= end:  # MATLAB writes [] inside structs as an element without content
        return np.zeros((0, 0))
    head = _HEADER_2D(buf, pos) if end - pos >= 40 else None
    if head is not None and head[:2] == (MI_UINT32, 8) and head[4:6] == (MI_INT32, 8) and head[8:] == (MI_INT8, 0):
        flags, dims, pos = head[2], head[6:8], pos + 40  # the usual header: 2-D, unnamed, in one read
    else:
        _, _, data, pos = _tag(buf, pos)
        flags = _TAG(buf, data)[0]
        _, nbytes, data, pos = _tag(buf, pos)
        dims = struct.unpack_from(f"<{nbytes // 4}i", buf, data)
        _, _, _, pos = _tag(buf, pos)  # the array name (empty inside structs and cells)
    mx_class, complex_, logical = flags & 0xFF, flags & 0x800, flags & 0x200
    if complex_:
        raise UnsupportedMat("complex arrays")
    count = 1
    for d in dims:
        count *= d

    if mx_class == MX_STRUCT:
        _, _, data, pos = _tag(buf, pos)
        name_length = struct.unpack_from("<i", buf, data)[0]
        _, nbytes, data, pos = _tag(buf, pos)
        raw = bytes(buf[data : data + nbytes])
        names = _FIELD_NAMES.get(raw)
        if names is None:
            names = _FIELD_NAMES[raw] = [raw[k : k + name_length].split(b"\0", 1)[0].decode("ascii")
                                         for k in range(0, nbytes, name_length)]
        items = []
        for _ in range(count):
            item = {}
            for name in names:
                item[name], pos = _element(buf, pos)
            items.append(item)
        if count == 0:
            return np.zeros(dims)
        return items[0] if count == 1 else items
    if mx_class == MX_CELL:
        items = []
        for _ in range(count):
            value, pos = _element(buf, pos)
            items.append(value)
        return items
    if mx_class not in _CLASS and mx_class != MX_CHAR:
        raise UnsupportedMat(f"MATLAB class {mx_class}")

    mdtype, nbytes, data, _ = _tag(buf, pos)
    if mx_class == MX_CHAR:
        if len(dims) != 2 or (dims[0] > 1 and count):
            raise UnsupportedMat("multi-row char arrays")
        raw = bytes(buf[data : data + nbytes])
        if mdtype in (MI_UINT16, MI_UTF16):
            return raw.decode("utf-16-le")
        if mdtype == MI_UTF32:
            return raw.decode("utf-32-le")
        return raw.decode("utf-8" if mdtype == MI_UTF8 else "latin-1")
    if mdtype not in _STORAGE:
        raise UnsupportedMat(f"numeric data stored as type {mdtype}")
    target = np.bool_ if logical else _CLASS[mx_class]
    if count == 0:
        return np.zeros(0, dtype=target)  # scipy squeezes empty arrays to shape (0,)
    if count == 1:
        value = _SCALAR[mdtype](buf, data)[0]
        return bool(value) if logical else target(value).item()
    stored = np.frombuffer(buf, dtype=_STORAGE[mdtype], count=nbytes // np.dtype(_STORAGE[mdtype]).itemsize,
                           offset=data)
    if stored.size != count:
        raise UnsupportedMat("sparse or inconsistent numeric data")
    return stored.astype(target).reshape(dims, order="F").squeeze()


def read_mat(path: str | Path) -> dict:
    """All variables of a little-endian MAT v5 file, simplified like ``loadmat(simplify_cells=True)``."""
    data = Path(path).read_bytes()
    if len(data) < 128 or not data.startswith(b"MATLAB"):
        raise UnsupportedMat("not a MATLAB 5 file")
    if data[126:128] != b"IM" or data[124:126] != b"\x00\x01":
        raise UnsupportedMat("not a little-endian MAT v5 file (big-endian, or v7.3/HDF5)")
    out, pos = {}, 128
    while pos + 8 <= len(data):
        mdtype, nbytes = _TAG(data, pos)
        if mdtype == MI_COMPRESSED:
            buf = zlib.decompress(data[pos + 8 : pos + 8 + nbytes])
            element, start = buf, 0
            pos += 8 + nbytes
        elif mdtype == MI_MATRIX:
            element, start = memoryview(data), pos
            pos += 8 + ((nbytes + 7) & ~7)
        else:
            raise UnsupportedMat(f"top-level element of type {mdtype}")
        name = _variable_name(element, start)
        inner_type, inner_bytes, inner_start, _ = _tag(element, start)
        out[name] = _matrix(element, inner_start, inner_start + inner_bytes)
    return out


def _variable_name(buf, pos: int) -> str:
    _, _, pos, _ = _tag(buf, pos)  # the miMATRIX tag: step inside
    for _ in range(2):  # array flags, dimensions
        _, _, _, pos = _tag(buf, pos)
    _, nbytes, data, _ = _tag(buf, pos)
    return bytes(buf[data : data + nbytes]).decode("ascii")
