"""Rebuilding a learned reply from its array bytes, faster than the C unpickler decodes it.

A 100-step reply is ~5,000 opcodes for 100 small arrays: the C unpickler takes ~0.3 ms, more
than the socket I/O of the whole exchange. Every reply of one server to one client has the same
skeleton (skeleton_cache): the same list of the same MetaActions (or ILStudio's object arrays of
dicts), only the actions differ. So once a skeleton is learned, `learn_template` works out where
each hole's bytes end up, and `ReplyTemplate.rebuild` makes the next matching frame's value from
its holes directly: one gather of the hole bytes into one array, a view per action, and a copy
of each entry's other fields.

Which hole becomes which array is measured, not assumed: the learned frame is decoded once more
with every hole filled with its own number, and each array must hold exactly one hole's marker.
A template is made only for the shapes the server sends (a list of wire-type objects, or of 1-D
object arrays of dicts, each holding one numeric array and otherwise str, bool, int, float or
None values; all arrays of one dtype and shape), and only when rebuilding the marked frame gives
what the unpickler gave. Anything else keeps the C unpickler. Rebuilding runs no code named by
the frame and allocates only the gathered bytes and the entries: the skeleton match has already
fixed everything but the hole contents, exactly as for the C path.

The rebuilt value equals the unpickler's; the difference is that its arrays (and, for the
batched form, the per-step object arrays) are views into one buffer instead of each owning its
memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from socket_bridge.wire_types import MetaAction, MetaObs

_SCALARS = (str, bool, int, float, type(None))
_WIRE_TYPES = (MetaObs, MetaAction)
# Markers are 4-byte hole numbers, so every hole (array) must hold at least 4 bytes.
_MARKER = np.dtype("<u4")


class ReplyTemplate:
    """The entries of a learned reply, each with the field its array goes into."""

    def __init__(self, gather: np.ndarray, dtype: np.dtype, shape: tuple[int, ...],
                 entries: list[tuple[type, dict, str]], batch: int) -> None:
        self.gather = gather  # frame positions of the arrays' bytes, array after array
        self.dtype, self.shape = dtype, shape
        self.entries = entries  # (type, fields with a placeholder for the array, its key)
        self.batch = batch  # 0: a list of wire-type objects; B: a list of (B,) object arrays

    def rebuild(self, frame: np.ndarray) -> list:
        arrays = list(frame[self.gather].view(self.dtype).reshape(-1, *self.shape))
        new = object.__new__
        items = []
        for (kind, fields, key), array in zip(self.entries, arrays, strict=True):
            values = fields.copy()
            values[key] = array
            if kind is dict:
                items.append(values)
            else:
                item = new(kind)
                item.__dict__ = values
                items.append(item)
        if not self.batch:
            return items
        steps = np.empty((len(items) // self.batch, self.batch), dtype=object)
        steps.reshape(-1)[:] = items
        return list(steps)


def learn_template(holes: list[tuple[int, int]], frame: bytes | memoryview,
                   decode: Callable[[bytes], Any]) -> ReplyTemplate | None:
    """A template for frames of this skeleton (`holes` of `frame`, an accepted frame), or None.
    `decode` decodes a frame of the same skeleton (the C fast path)."""
    if not holes or any(end - start < _MARKER.itemsize for start, end in holes):
        return None
    marked = bytearray(frame)
    for number, (start, end) in enumerate(holes):
        marked[start:end] = _marker(number, end - start)
    try:
        value = decode(bytes(marked))
    except Exception:
        return None
    found = _entries(value)
    if found is None:
        return None
    entries, arrays, batch = found
    order = [_hole_of(array, holes) for array in arrays]
    first = arrays[0] if arrays else None
    if (first is None or sorted(order) != list(range(len(holes)))
            or any((a.dtype, a.shape) != (first.dtype, first.shape) for a in arrays)):
        return None
    gather = np.concatenate([np.arange(*holes[number]) for number in order])
    template = ReplyTemplate(gather, first.dtype, first.shape, entries, batch)
    marked_frame = np.frombuffer(bytes(marked), np.uint8)
    return template if _equal(template.rebuild(marked_frame), value) else None


def _hole_of(array: np.ndarray, holes: list[tuple[int, int]]) -> int:
    """The number of the hole whose marker fills `array` exactly, or -1."""
    data = array.tobytes()
    if len(data) < _MARKER.itemsize:
        return -1
    number = int(np.frombuffer(data[:_MARKER.itemsize], _MARKER)[0])
    if number >= len(holes):
        return -1
    start, end = holes[number]
    return number if data == _marker(number, end - start) else -1


def _marker(number: int, size: int) -> bytes:
    """`size` bytes of hole `number`'s marker: the number as 4 bytes, repeated."""
    return np.full(-(-size // _MARKER.itemsize), number, _MARKER).tobytes()[:size]


def _entries(value: Any) -> tuple[list[tuple[type, dict, str]], list[np.ndarray], int] | None:
    """The entries of a reply of a known shape, their arrays, and the batch size (0: a list of
    wire-type objects), or None for any other value."""
    if type(value) is not list or not value:
        return None
    if all(type(item) in _WIRE_TYPES for item in value):
        flat, batch = value, 0
    elif all(type(item) is np.ndarray and item.dtype == object and item.ndim == 1
             for item in value) and len({item.shape for item in value}) == 1:
        flat, batch = [entry for item in value for entry in item], value[0].shape[0]
        if batch == 0 or not all(type(entry) is dict for entry in flat):
            return None
    else:
        return None
    entries, arrays = [], []
    for item in flat:
        fields = item if type(item) is dict else vars(item)
        keys = [k for k, v in fields.items() if type(v) is np.ndarray]
        if len(keys) != 1 or not all(type(v) in _SCALARS for k, v in fields.items()
                                     if k != keys[0]):
            return None
        array = fields[keys[0]]
        if array.dtype.hasobject or not array.flags.c_contiguous:
            return None
        entries.append((type(item), {**fields, keys[0]: None}, keys[0]))
        arrays.append(array)
    return entries, arrays, batch


def _equal(rebuilt: list, value: list) -> bool:
    """Same items, types, field order, scalars and array bytes (the marked frame's value)."""
    if len(rebuilt) != len(value) or any(type(a) is not type(b)
                                         for a, b in zip(rebuilt, value, strict=True)):
        return False
    pairs = []
    for new, old in zip(rebuilt, value, strict=True):
        if type(old) is not np.ndarray:
            pairs.append((new, old))
        elif new.shape != old.shape:
            return False
        else:
            pairs += zip(new, old, strict=True)
    return all(type(new) is type(old) and _same_fields(*(
        (new, old) if type(old) is dict else (vars(new), vars(old)))) for new, old in pairs)


def _same_fields(a: dict, b: dict) -> bool:
    if list(a) != list(b):
        return False
    for key, x in a.items():
        y = b[key]
        if type(x) is not type(y):
            return False
        same = ((x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes())
                if type(x) is np.ndarray else x == y)
        if not same:
            return False
    return True
