"""Pickles that numpy 1.x and 2.x both load with plain `pickle.loads`.

numpy 2 pickles arrays and scalars through `numpy._core.*`, a module numpy 1.26.0-1.26.3 do not
have (ILStudio clients pin numpy 1.26). This pickler writes arrays as `numpy.empty(...)` followed
by the standard ndarray state, and numpy scalars as `numpy.<type>(value)`: names that exist, with
the same meaning, in every numpy since 1.x. It is the C pickler, so it stays fast.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

import numpy as np

__all__ = ["PROTOCOL", "dump_chunks", "dumps"]

# Protocol 4: Python >= 3.4, out-of-band-free, framed. Fixed so replies do not change with the
# server's Python version (3.14 made 5 the default).
PROTOCOL = 4

_PORTABLE_SCALAR_KINDS = "biufc"  # bool, int, uint, float, complex: exact round trip via .item()


# The C pickler writes a byte string of at least this size (its FRAME_SIZE_TARGET) to the file
# as the object itself, outside its frames: such array data can be sent from the array's memory.
DIRECT_BYTES = 64 * 1024
# Stand-ins for large array data, by size: a few distinct objects per size, since the pickler's
# memo would write a repeated object as a reference. Only their identity is used, never content.
_placeholders: dict[int, list[bytes]] = {}
_placeholders_lock = threading.Lock()


def _placeholder(size: int, index: int) -> bytes:
    with _placeholders_lock:
        pool = _placeholders.setdefault(size, [])
        while len(pool) <= index:
            if len(_placeholders) > 16:  # many sizes: start afresh rather than grow
                _placeholders.clear()
                _placeholders[size] = pool
            pool.append(bytes(size))
        return pool[index]


class _PortablePickler(pickle.Pickler):
    def __init__(self, file: Any, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self.direct: dict[int, np.ndarray] = {}  # id(placeholder) -> the array it stands for
        self._used: dict[int, int] = {}  # placeholders of each size used in this pickle

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            if obj.nbytes >= DIRECT_BYTES and obj.flags.c_contiguous and not obj.dtype.hasobject:
                # numpy's own state, (1, shape, dtype, is_fortran, data), without copying the
                # data into a bytes object (0.9 MB per camera): dump_chunks sends the array.
                index = self._used.get(obj.nbytes, 0)
                self._used[obj.nbytes] = index + 1
                data = _placeholder(obj.nbytes, index)
                self.direct[id(data)] = obj
                return np.empty, ((0,), obj.dtype), (1, obj.shape, obj.dtype, False, data)
            _, _, state = obj.__reduce__()
            return np.empty, ((0,), obj.dtype), state
        if isinstance(obj, np.generic) and obj.dtype.kind in _PORTABLE_SCALAR_KINDS \
                and obj.dtype.itemsize <= 16 and type(obj).__module__ == "numpy":
            return type(obj), (obj.item(),)
        return NotImplemented


class _Chunks(list):
    """A write-only file that keeps the pickler's chunks. The C pickler hands large payloads
    (image bytes) over as they are, so joining once beats a growing BytesIO (~15x for 1 MB)."""

    write = list.append


def dump_chunks(obj: Any) -> list[bytes | memoryview]:
    """The pickle of `obj` as the list of chunks the pickler wrote (their concatenation is
    `dumps(obj)`); `write_frame` sends such a list without joining it. Large contiguous arrays
    appear as views of their own memory: the list is valid while they are unchanged."""
    chunks = _Chunks()
    pickler = _PortablePickler(chunks, protocol=PROTOCOL)
    pickler.dump(obj)
    if pickler.direct:
        for i, chunk in enumerate(chunks):
            array = pickler.direct.get(id(chunk))
            if array is not None:
                chunks[i] = memoryview(array).cast("B")
    return chunks


def dumps(obj: Any) -> bytes:
    """Pickle `obj` (protocol 4) so that both numpy 1.x and 2.x peers can load it."""
    return b"".join(dump_chunks(obj))
