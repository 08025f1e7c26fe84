"""Pickles that numpy 1.x and 2.x both load with plain `pickle.loads`.

numpy 2 pickles arrays and scalars through `numpy._core.*`, a module numpy 1.26.0-1.26.3 do not
have (ILStudio clients pin numpy 1.26). This pickler writes arrays as `numpy.empty(...)` followed
by the standard ndarray state, and numpy scalars as `numpy.<type>(value)`: names that exist, with
the same meaning, in every numpy since 1.x. It is the C pickler, so it stays fast.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

__all__ = ["PROTOCOL", "dump_chunks", "dumps"]

# Protocol 4: Python >= 3.4, out-of-band-free, framed. Fixed so replies do not change with the
# server's Python version (3.14 made 5 the default).
PROTOCOL = 4

_PORTABLE_SCALAR_KINDS = "biufc"  # bool, int, uint, float, complex: exact round trip via .item()


class _PortablePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
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


def dump_chunks(obj: Any) -> list[bytes]:
    """The pickle of `obj` as the list of chunks the pickler wrote (their concatenation is
    `dumps(obj)`); `write_frame` sends such a list without joining it."""
    chunks = _Chunks()
    _PortablePickler(chunks, protocol=PROTOCOL).dump(obj)
    return chunks


def dumps(obj: Any) -> bytes:
    """Pickle `obj` (protocol 4) so that both numpy 1.x and 2.x peers can load it."""
    return b"".join(dump_chunks(obj))
