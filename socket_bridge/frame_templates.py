"""Rebuilding a learned frame's value from its holes, faster than the C unpickler decodes it.

Every reply of one server to one client has the same skeleton (skeleton_cache), and so has every
request of one client: the same list of MetaActions (or ILStudio's object arrays of dicts), the
same MetaObs, with other array bytes and another timestep. Once a skeleton is learned,
`learn_template` works out where each hole's bytes end up, and the template builds the next
matching frame's value from its holes directly:

* a reply (~5,000 opcodes for 100 small arrays, ~0.3 ms in the C unpickler): the hole bytes
  gathered into one array (a few strided blocks: strided_rows), a view per action, a copy of
  each entry's other fields;
* a request: the MetaObs's fields, each array from its hole, and its timestep read from its
  hole. With `alias` (the server, whose frame buffers are never reused while a view of them
  lives: FrameReader), arrays of ALIAS_MIN_BYTES or more are views of the frame instead of
  copies: a camera image is not copied at all.

Which hole becomes which value is measured, not assumed: the learned frame is decoded once more
with every hole of 4 bytes or more filled with its own number (smaller ones with 0xFF), and each
array must hold exactly one hole's marker; the one hole left, if any, must be the request's
timestep, and a decode with that hole all 0xFF tells whether it is signed. A template is made
only for the shapes the server and the clients send (a list of wire-type objects, or of 1-D
object arrays of dicts, each holding one numeric array and otherwise str, bool, int, float or
None values; or one MetaObs of arrays and such values), and only when rebuilding the marked
frame gives exactly what the unpickler gave. Anything else keeps the C unpickler. Rebuilding
runs no code named by the frame and allocates only the entries and (without `alias`) copies of
the hole bytes: the skeleton match has already fixed everything but the hole contents, exactly
as for the C path.

The rebuilt value equals the unpickler's, arrays' dtype, shape and writability included; the
difference is that arrays are views (of one gathered buffer, of the frame) where the unpickler
gives each its own memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from socket_bridge.strided_rows import Run, gather, runs_of
from socket_bridge.wire_types import MetaAction, MetaObs

_SCALARS = (str, bool, int, float, type(None))
_WIRE_TYPES = (MetaObs, MetaAction)
# Markers are 4-byte hole numbers, so a hole that is an array must hold at least 4 bytes.
_MARKER = np.dtype("<u4")
# Arrays at least this large are views of an aliasable frame (smaller ones are copied: a copy
# is cheaper than a view's bookkeeping, and keeps them aligned).
ALIAS_MIN_BYTES = 64 << 10
# Replies with more array bytes than this are not rebuilt (a 100-step reply has 5.6 kB, a batch
# of 8 45 kB): a hostile frame must not make us allocate much per reply.
MAX_GATHER_BYTES = 1 << 20


class ReplyTemplate:
    """The entries of a learned reply, each with the field its array goes into."""

    def __init__(self, runs: list[Run], dtype: np.dtype, shape: tuple[int, ...],
                 entries: list[tuple[type, dict, str]], batch: int) -> None:
        self.runs = runs  # where the arrays' bytes are in the frame, array after array
        self.dtype, self.shape = dtype, shape
        self.width = dtype.itemsize * int(np.prod(shape))
        self.entries = entries  # (type, fields with a placeholder for the array, its key)
        self.batch = batch  # 0: a list of wire-type objects; B: a list of (B,) object arrays

    def rebuild(self, frame: np.ndarray, alias: bool = False) -> list:
        del alias  # the gather copies: replies are small
        arrays = list(gather(frame, self.runs, self.width).view(self.dtype)
                      .reshape(-1, *self.shape))
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


class RequestTemplate:
    """A learned request: its fields, where each array's bytes are, and where its timestep is."""

    def __init__(self, kind: type, fields: dict,
                 arrays: list[tuple[str, int, int, np.dtype, tuple[int, ...], bool]],
                 timestep: tuple[int, int, bool] | None) -> None:
        self.kind = kind
        self.fields = fields  # the scalar fields, with placeholders for the others
        self.arrays = arrays  # (field, start, bytes, dtype, shape, writeable)
        self.timestep = timestep  # (start, end, signed) of a free timestep int

    def rebuild(self, frame: np.ndarray, alias: bool = False) -> Any:
        values = self.fields.copy()
        for key, start, nbytes, dtype, shape, writeable in self.arrays:
            data = frame[start:start + nbytes]
            if not (alias and nbytes >= ALIAS_MIN_BYTES):
                data = data.copy()
            array = data.view(dtype).reshape(shape)
            if not writeable:
                array.flags.writeable = False
            values[key] = array
        if self.timestep is not None:
            start, end, signed = self.timestep
            values["timestep"] = int.from_bytes(frame[start:end].tobytes(), "little",
                                                signed=signed)
        obs = object.__new__(self.kind)
        obs.__dict__ = values
        return obs


def learn_template(holes: list[tuple[int, int]], frame: bytes | memoryview,
                   decode: Callable[[bytearray], Any]) -> ReplyTemplate | RequestTemplate | None:
    """A template for frames of this skeleton (`holes` of `frame`, an accepted frame), or None.
    `decode` decodes a frame of the same skeleton (the C fast path)."""
    if not holes:
        return None
    marked = bytearray(frame)
    for number, (start, end) in enumerate(holes):
        marked[start:end] = _marker(number, end - start)
    try:
        value = decode(marked)
        if type(value) is list:
            template = _reply_template(holes, value)
        elif type(value) in _WIRE_TYPES:
            template = _request_template(holes, marked, value, decode)
        else:
            return None
        if template is None or not _equal(template.rebuild(np.frombuffer(marked, np.uint8)),
                                          value):
            return None
    except Exception:  # a frame this model does not follow: the C unpickler decodes it
        return None
    return template


def _reply_template(holes: list[tuple[int, int]], value: list) -> ReplyTemplate | None:
    found = _entries(value)
    if found is None:
        return None
    entries, arrays, batch = found
    if sum(end - start for start, end in holes) > MAX_GATHER_BYTES:
        return None  # a hostile frame must not make us allocate much per reply
    order = [_hole_of(array, holes) for array in arrays]
    first = arrays[0] if arrays else None
    if (first is None or sorted(order) != list(range(len(holes)))
            or any((a.dtype, a.shape) != (first.dtype, first.shape) for a in arrays)
            or any(end - start != first.nbytes for start, end in holes)):
        return None
    return ReplyTemplate(runs_of([holes[number][0] for number in order]), first.dtype,
                         first.shape, entries, batch)


def _request_template(holes: list[tuple[int, int]], marked: bytearray, value: Any,
                      decode: Callable[[bytearray], Any]) -> RequestTemplate | None:
    fields: dict = {}
    arrays = []
    used = set()
    for key, field in vars(value).items():
        if type(field) in _SCALARS:
            fields[key] = field
            continue
        number = _hole_of(field, holes) if type(field) is np.ndarray else -1
        if number < 0 or number in used or field.dtype.hasobject:
            return None
        used.add(number)
        start, end = holes[number]
        arrays.append((key, start, end - start, field.dtype, field.shape, field.flags.writeable))
        fields[key] = None
    left = [hole for number, hole in enumerate(holes) if number not in used]
    if not left:
        return RequestTemplate(type(value), fields, arrays, None)
    if len(left) > 1 or type(fields.get("timestep")) is not int:
        return None
    # The one hole left is the timestep (free_values frees no other int). All 0xFF, it reads
    # -1 when the opcode is signed (BININT, LONG1) and 255 / 65535 when not (BININT1/2).
    start, end = left[0]
    probe = bytearray(marked)
    probe[start:end] = b"\xff" * (end - start)
    read = vars(decode(probe)).get("timestep")
    signed = type(read) is int and read < 0
    if read != int.from_bytes(b"\xff" * (end - start), "little", signed=signed):
        return None
    return RequestTemplate(type(value), fields, arrays, (start, end, signed))


def _marker(number: int, size: int) -> bytes:
    """`size` bytes of hole `number`'s marker: the number as 4 bytes, repeated; all 0xFF for a
    hole too small for one (an int)."""
    if size < _MARKER.itemsize:
        return b"\xff" * size
    return np.full(-(-size // _MARKER.itemsize), number, _MARKER).tobytes()[:size]


def _hole_of(array: np.ndarray, holes: list[tuple[int, int]]) -> int:
    """The number of the hole whose marker fills `array` exactly (in C order), or -1."""
    if not array.flags.c_contiguous:
        return -1
    data = array.tobytes()
    if len(data) < _MARKER.itemsize:
        return -1
    number = int(np.frombuffer(data[:_MARKER.itemsize], _MARKER)[0])
    if number >= len(holes):
        return -1
    start, end = holes[number]
    return number if data == _marker(number, end - start) else -1


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


def _equal(rebuilt: Any, value: Any) -> bool:
    """Same items, types, field order, scalars and arrays (the marked frame's value)."""
    if type(value) is not list:
        return type(rebuilt) is type(value) and _same_fields(vars(rebuilt), vars(value))
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
        if type(x) is np.ndarray:
            same = ((x.dtype, x.shape, x.flags.writeable, x.tobytes())
                    == (y.dtype, y.shape, y.flags.writeable, y.tobytes()))
        else:
            same = x == y
        if not same:
            return False
    return True
