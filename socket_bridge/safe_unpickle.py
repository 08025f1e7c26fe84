"""The one safe decoder for pickles that arrive from the network (or from checkpoint stats files).

Plain `pickle.loads` on untrusted bytes runs arbitrary code: a pickle names any importable
callable and calls it. This unpickler resolves only an allow-list of names, and where a
permitted name would be dangerous with hostile arguments (array allocation, bytearray(n),
codecs), it hands the pickle a checked stand-in instead of the real callable:

* the wire types `benchmark.base.MetaObs` and `MetaAction` (optional, per call);
* numpy array, dtype and scalar reconstruction under both the numpy 1.x (`numpy.core`) and the
  numpy 2.x (`numpy._core`) module paths, plus the portable form `socket_bridge.portable_pickle`
  writes (`numpy.empty` + state, `numpy.<scalar type>`);
* builtin containers and scalars, and the helpers pickle itself emits for them in protocols 0-2
  (`copyreg._reconstructor`, `_codecs.encode` for bytes).

Everything else — os, posix, subprocess, builtins.eval/exec/getattr/__import__, importlib,
functools, operator, arbitrary classes — raises `UnsafePickleError` from `find_class`, i.e.
before anything is called.

Memory is bounded by the frame. No single opcode may claim more than the pickle's own length
(see _RestrictedUnpickler for the memo), and every decode has an allocation budget proportional
to the frame's size, with an absolute cap (`decode_budget`): each opcode and each construction
is charged what it creates (containers and their items, memo entries, arrays, copies of bytes and
strings, wire-type states), so a small pickle that repeats a 1 MiB construction through the memo,
or nests a million empty containers, is refused when it passes the budget, long before it can
exhaust memory.

Speed: the checks above run in the pure-Python unpickler, ~0.3-1 us per opcode (a 100-step
reply has 3,500-5,000 opcodes). A frame shaped exactly like one it already accepted, differing
only in its array data and timestep, is decoded by CPython's C unpickler with the same
allow-list instead (see skeleton_cache for the argument that this is the same decode, and
test_skeleton_cache for the differential fuzzing that checks it), or, for the requests and
replies clients and the server send, rebuilt from its holes (frame_templates).
"""

from __future__ import annotations

import math
import pickle
import re
import struct
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from socket_bridge.frame_templates import learn_template
from socket_bridge.pickle_names import python3_name
from socket_bridge.skeleton_cache import SkeletonCache, c_loads
from socket_bridge.wire_types import MetaAction, MetaObs

__all__ = ["DecodeBudgetExceeded", "UnsafePickleError", "decode_budget", "fast_decodes",
           "safe_loads", "template_decodes"]

# Upper bound for an array a pickle asks us to create *before* filling it. numpy's own pickles
# and ours ask for shape (0,) and then set the data (bounded by the frame); a large shape here
# could only be an attempt to make us allocate (an object array would even be filled).
MAX_ARRAY_BYTES = 1 << 20

# The allocation budget of one decode: BUDGET_BASE + BUDGET_PER_BYTE x the pickle's length, at
# most MAX_DECODE_BYTES. Measured charges: a request with a 480x640 camera ~1.0x its size (the
# image bytes, copied once into the array; 2x at protocols 0 and 5), a 100-step reply ~26x its
# 11 KB and a batch-of-8 reply ~21x (all small objects; charges run 1.4-2.5x above what
# tracemalloc sees). The cap holds a 64 MiB frame (the default limit) of camera images.
BUDGET_BASE = 1 << 20
BUDGET_PER_BYTE = 32
MAX_DECODE_BYTES = 256 << 20


def decode_budget(size: int) -> int:
    """Bytes a pickle of `size` bytes may make the decoder allocate, counted as it decodes."""
    return min(MAX_DECODE_BYTES, BUDGET_BASE + BUDGET_PER_BYTE * size)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle referenced something outside the allow-list; nothing it named was called."""


class DecodeBudgetExceeded(UnsafePickleError):
    """The pickle builds more than its allocation budget; decoding stopped there."""


def _checked_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnsafePickleError(f"invalid array shape {shape!r}")
    return shape


def _array_nbytes(shape: Any, dtype: np.dtype) -> tuple[tuple[int, ...], int]:
    """The checked shape and the bytes an array of it would hold (an object array's pointers),
    for arrays allocated before their data is filled in: at most MAX_ARRAY_BYTES."""
    shape = _checked_shape(shape)
    nbytes = math.prod(shape) * max(dtype.itemsize, 1)
    if nbytes > MAX_ARRAY_BYTES:
        raise UnsafePickleError(f"array of shape {shape} and dtype {dtype} is too large")
    return shape, nbytes


# Plain dtype codes only ('f4', 'O8', '<U10', 'b1', 'M8[ns]'...): no structured or subarray specs.
_DTYPE_SPEC = re.compile(r"^[<>|=]?[?a-zA-Z]\d{0,5}(\[[a-zA-Z]{1,3}\])?$")


def _safe_dtype(spec: Any, align: bool = False, copy: bool = True) -> np.dtype:
    if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
        raise UnsafePickleError(f"dtype spec {spec!r} is not a plain dtype code")
    # Always a fresh copy: the BUILD that follows mutates the dtype, and with copy=False it would
    # mutate numpy's process-wide singleton for that type.
    del copy
    dtype = np.dtype(spec, align=bool(align), copy=True)
    if dtype.itemsize > MAX_ARRAY_BYTES:
        raise UnsafePickleError(f"dtype {spec!r} is too large")
    return dtype


class _NDArrayToken:
    """Stands in for `numpy.ndarray`, which pickles only pass to `_reconstruct` as the subtype.

    Handing out the real class would let a pickle call `ndarray(huge_shape)` directly.
    """


def _as_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, (bytes, str)):
        return _safe_dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
    raise UnsafePickleError(f"expected a dtype, got {type(dtype).__name__}")


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # numpy's protocol-5 form: a view of the buffer (a 1-D buffer reshapes to either order
    # without a copy), so it allocates nothing beyond the array object REDUCE is charged for,
    # and the buffer, read from the frame, bounds its size: no MAX_ARRAY_BYTES here (a 480x640
    # camera image is 0.9 MB).
    dt = _as_dtype(dtype)
    if dt.hasobject:
        raise UnsafePickleError("object arrays cannot be read from a buffer")
    if order not in ("C", "F", "A", "K"):
        raise UnsafePickleError(f"invalid array order {order!r}")
    return np.frombuffer(buf, dt).reshape(_checked_shape(shape), order=order)


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    dt = _as_dtype(dtype)
    if dt.hasobject:
        return data  # numpy stores the object itself; it was decoded under the same rules
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise UnsafePickleError("numpy scalar data does not match its dtype")
    return np.frombuffer(data, dt)[0].copy()


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor: how protocols 0 and 1 pickle plain class instances.
    if cls not in (MetaObs, MetaAction) or base is not object or state is not None:
        raise UnsafePickleError("copyreg._reconstructor used for something other than a wire type")
    return object.__new__(cls)


def _numpy_scalar_type(kind: type) -> Callable[[Any], Any]:
    def build(value: Any) -> Any:
        # numpy.float64([...]) would build a whole array; the portable form passes one number.
        if type(value) not in (bool, int, float, complex):
            raise UnsafePickleError(f"numpy.{kind.__name__} takes one number here")
        return kind(value)

    return build


def _numpy_scalar_types() -> dict[tuple[str, str], Any]:
    # What socket_bridge.portable_pickle writes for numpy scalars: numpy.<type>(number).
    names = ["bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "complex64", "complex128"]
    found = {("numpy", name): _numpy_scalar_type(getattr(np, name)) for name in names}
    found[("numpy", "bool")] = found[("numpy", "bool_")]  # numpy 2 names the type numpy.bool
    return found


_NUMPY_PATHS = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_PATHS = ("numpy.core.numeric", "numpy._core.numeric")

class _Charged(str):
    """An allow-list entry that allocates in proportion to its arguments: the name of the
    _RestrictedUnpickler method that charges the decode's budget and then builds the object."""


_ALWAYS_ALLOWED: dict[tuple[str, str], Any] = {
    **{(path, "_reconstruct"): _Charged("_reconstruct") for path in _NUMPY_PATHS},
    **{(path, "scalar"): _safe_scalar for path in _NUMPY_PATHS},
    **{(path, "_frombuffer"): _safe_frombuffer for path in _NUMERIC_PATHS},
    ("numpy", "ndarray"): _NDArrayToken,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy", "empty"): _Charged("_empty"),
    **_numpy_scalar_types(),
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): _Charged("_codecs_encode"),
    ("builtins", "object"): object,
    ("builtins", "set"): _Charged("_set"),
    ("builtins", "frozenset"): _Charged("_frozenset"),
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): _Charged("_bytearray"),
    ("builtins", "bytes"): _Charged("_bytes"),
}

_WIRE_TYPES: dict[tuple[str, str], Any] = {
    ("benchmark.base", "MetaObs"): MetaObs,
    ("benchmark.base", "MetaAction"): MetaAction,
}


_WITH_WIRE_TYPES = {**_ALWAYS_ALLOWED, **_WIRE_TYPES}

# Hostile protocol-0 strings with bad escapes make pickle.py emit a DeprecationWarning each;
# they are refused or decoded like any other input, and must not flood the server's log.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="pickle")
_BYTE_ORDERS = ("<", ">", "|", "=")


def _check_array_state(state: Any) -> int:
    """ndarray.__setstate__ does not check that the data fits the shape for object arrays:
    numpy 2.4 segfaults on (1, (105,), dtype('O'), False, [x]). Check everything first.
    Returns the bytes the state fills in (an object array's pointers)."""
    if not (isinstance(state, tuple) and len(state) == 5):
        raise UnsafePickleError("array state must be (version, shape, dtype, fortran, data)")
    version, shape, dtype, fortran, data = state
    if version != 1 or not isinstance(dtype, np.dtype) or not isinstance(fortran, bool):
        raise UnsafePickleError("malformed array state")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise UnsafePickleError(f"invalid array shape {shape!r}")
    count = math.prod(shape)
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != count or dtype.fields is not None:
            raise UnsafePickleError("object array data does not match its shape")
        return count * dtype.itemsize
    if not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
        raise UnsafePickleError("array data does not match its shape and dtype")
    return len(data)


def _opcode_costs() -> tuple[list[int], list[int]]:
    """Bytes each opcode may create: a fixed part, and a part per item for the opcodes that
    consume everything above the last MARK (the items' own memory was charged when they were
    pushed). Sizes are CPython 3.11's, rounded up: an empty set is 216 bytes, a dict entry with
    its share of the table ~40, a memo entry with its int key ~80. Pushing a reference costs a
    stack slot (8). Strings and bytes read from the input cost their header here; their data is
    bounded by the input itself. Calls cost an object; what a call builds in proportion to its
    arguments is charged by the callee (the _Charged allow-list entries) before it builds it."""
    op = {name: code[0] for name, code in vars(pickle).items()
          if name.isupper() and isinstance(code, bytes) and len(code) == 1}
    fixed = [8] * 256
    for name in ("STOP", "POP", "POP_MARK", "PROTO", "FRAME"):
        fixed[op[name]] = 0
    for name in ("INT", "BININT", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"):
        fixed[op[name]] = 32
    for name in ("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
                 "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
                 "GLOBAL", "STACK_GLOBAL", "EXT1", "EXT2", "EXT4"):
        fixed[op[name]] = 64
    for name in ("MARK", "EMPTY_LIST", "EMPTY_DICT", "LIST", "DICT", "TUPLE1", "TUPLE2",
                 "TUPLE3", "TUPLE"):
        fixed[op[name]] = 80
    for name in ("EMPTY_SET", "FROZENSET", "READONLY_BUFFER"):
        fixed[op[name]] = 224
    for name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "SETITEM"):
        fixed[op[name]] = 96
    for name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "BUILD", "BYTEARRAY8"):
        fixed[op[name]] = 128
    per_item = [0] * 256
    for name, cost in (("TUPLE", 8), ("LIST", 8), ("APPENDS", 8), ("DICT", 48),
                       ("SETITEMS", 48), ("ADDITEMS", 64), ("FROZENSET", 64)):
        per_item[op[name]] = cost
    return fixed, per_item


_OPCODE_COST, _OPCODE_ITEM_COST = _opcode_costs()


def _charged_per_item(handler: Callable[[Any], None], cost: int) -> Callable[[Any], None]:
    """`handler` of an opcode that consumes the items above the last MARK (self.stack is
    those items), charging `cost` per item before it runs."""
    def run(unpickler: _RestrictedUnpickler) -> None:
        unpickler.charge(cost * len(unpickler.stack))
        handler(unpickler)

    return run


def _checked_bytearray8(unpickler: _RestrictedUnpickler) -> None:
    """BYTEARRAY8 without the eager allocation: the Python unpickler allocates (and zeroes) the
    declared length before reading, so 20 bytes could claim 1 GB. No claim may exceed the input."""
    (length,) = struct.unpack("<Q", unpickler.read(8))
    if length > unpickler.input_size:
        raise pickle.UnpicklingError(f"BYTEARRAY8 of {length} bytes in a pickle of "
                                     f"{unpickler.input_size}")
    unpickler.charge(length)
    data = bytearray(length)
    if unpickler.readinto(data) != length:
        raise pickle.UnpicklingError("pickle data was truncated")
    unpickler.append(data)


def _checked_build(unpickler: _RestrictedUnpickler) -> None:
    """The BUILD opcode, restricted: it may only fill in the wire types, arrays and dtypes.

    A dtype's state must be the one numpy itself writes for that dtype, byte order aside: numpy
    trusts the flags, fields and sizes in a dtype state, and a pickle that sets the flags of an
    object dtype makes later array operations crash the process (found by fuzzing).
    """
    state = unpickler.stack.pop()
    inst = unpickler.stack[-1]
    if isinstance(inst, np.dtype):
        expected = inst.__reduce__()[2]
        if not (isinstance(state, tuple) and len(state) == len(expected)
                and state[1] in _BYTE_ORDERS and state[0] == expected[0]
                and state[2:] == expected[2:]):
            raise UnsafePickleError(f"dtype state {state!r} is not {inst}'s own")
        inst.__setstate__(state)
    elif type(inst) is np.ndarray:
        unpickler.charge(_check_array_state(state))  # the data is copied into the array
        inst.__setstate__(state)
    elif type(inst) in (MetaObs, MetaAction):
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise UnsafePickleError(f"{type(inst).__name__} state must be a dict of fields")
        # The fields are copied into the instance's own dict: one memoized state of many
        # entries must not be copied into many instances for free.
        unpickler.charge(_OPCODE_ITEM_COST[pickle.SETITEMS[0]] * 2 * len(state))
        vars(inst).update(state)
    else:
        raise UnsafePickleError(f"BUILD of {type(inst).__name__} is not allowed")


def _restricted_dispatch() -> dict[int, Callable[[Any], None]]:
    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: _checked_build,
                pickle.BYTEARRAY8[0]: _checked_bytearray8}
    for op, cost in enumerate(_OPCODE_ITEM_COST):
        if cost:
            dispatch[op] = _charged_per_item(dispatch[op], cost)
    return dispatch


class _Constructors:
    """The _Charged allow-list entries: each charges what it is about to build to `charge`."""

    def charge(self, nbytes: int) -> None:
        raise NotImplementedError

    def resolve(self, allowed: dict[tuple[str, str], Any], module: str, name: str) -> Any:
        """The allow-list's object for module.name (charged entries bound to self), or
        UnsafePickleError: nothing outside the allow-list is ever imported or called."""
        module, name = python3_name(module, name)
        try:
            found = allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused global {module}.{name}") from None
        return getattr(self, found) if type(found) is _Charged else found

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy's own pickles: _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
        if subtype is not _NDArrayToken:
            raise UnsafePickleError("_reconstruct called with a subtype other than numpy.ndarray")
        dt = _as_dtype(dtype)
        shape, nbytes = _array_nbytes(shape, dt)
        self.charge(nbytes)
        return np.ndarray.__new__(np.ndarray, shape, dt)

    def _empty(self, shape: Any, dtype: Any) -> np.ndarray:
        # The portable form written by socket_bridge.portable_pickle: empty(...) then __setstate__.
        dt = _as_dtype(dtype)
        shape, nbytes = _array_nbytes(shape, dt)
        self.charge(nbytes)
        return np.empty(shape, dt)

    def _codecs_encode(self, text: Any, encoding: str = "utf-8") -> bytes:
        # Protocols 0-2 pickle bytes as _codecs.encode(str, 'latin1'); no other codec is needed.
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError("_codecs.encode is allowed only as the latin1 bytes form")
        self.charge(len(text))
        return text.encode("latin1")

    def _bytes_like(self, kind: type, source: Any, args: tuple) -> Any:
        # bytearray(10**10) would allocate and zero 10 GB: only copies of data are allowed,
        # from what pickles pass (bytes, a latin1 str, a list of ints), each charged.
        if not isinstance(source, (bytes, bytearray, str, list, tuple)):
            raise UnsafePickleError(f"{kind.__name__}({type(source).__name__}) is not allowed")
        self.charge(len(source) * (4 if isinstance(source, str) else 1))
        return kind(source, *args)

    def _bytes(self, source: Any = b"", *args: Any) -> bytes:
        return self._bytes_like(bytes, source, args)

    def _bytearray(self, source: Any = b"", *args: Any) -> bytearray:
        return self._bytes_like(bytearray, source, args)

    def _set_like(self, kind: type, items: Iterable[Any]) -> Any:
        # Protocols 2-3 pickle sets as set([items]); a memoized list could be copied many times.
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise UnsafePickleError(f"{kind.__name__}({type(items).__name__}) is not allowed")
        self.charge(_OPCODE_COST[pickle.EMPTY_SET[0]]
                    + _OPCODE_ITEM_COST[pickle.ADDITEMS[0]] * len(items))
        return kind(items)

    def _set(self, items: Iterable[Any] = ()) -> set:
        return self._set_like(set, items)

    def _frozenset(self, items: Iterable[Any] = ()) -> frozenset:
        return self._set_like(frozenset, items)


class _RestrictedUnpickler(pickle._Unpickler, _Constructors):
    """The pure-Python unpickler, on purpose: CPython's C unpickler keeps its memo in an array
    that a PUT / LONG_BINPUT opcode with a large index resizes and zeroes, so a 9-byte pickle
    makes it allocate gigabytes (index 2**27: 2 GB, 2.7 s) before any global is looked up. The
    Python unpickler's memo is a dict. It costs ~35 us more per request (139 opcodes).

    `load` charges every opcode's fixed cost to the decode's allocation budget before running
    it, the opcodes that take the items above a MARK charge per item, and the _Charged
    constructors below charge what they are about to build."""

    dispatch: ClassVar[dict] = _restricted_dispatch()

    def __init__(self, file: _ViewReader, allow_wire_types: bool, budget: int) -> None:
        super().__init__(file)
        self.input_size = file.size
        self.budget = budget
        self.left = budget
        self._allowed = _WITH_WIRE_TYPES if allow_wire_types else _ALWAYS_ALLOWED

    def charge(self, nbytes: int) -> None:
        """Count `nbytes` against the budget; refuse the pickle once it is spent."""
        self.left -= nbytes
        if self.left < 0:
            raise DecodeBudgetExceeded(
                f"pickle of {self.input_size} bytes builds more than its allocation budget of "
                f"{self.budget} bytes")

    def load(self) -> Any:
        """pickle._Unpickler.load with each opcode charged before it runs."""
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        dispatch, cost = self.dispatch, _OPCODE_COST
        try:
            while key := read(1):
                self.left -= cost[key[0]]
                if self.left < 0:
                    self.charge(0)  # raises, with the message
                dispatch[key[0]](self)
        except pickle._Stop as stop:
            return stop.value
        finally:
            # The memo holds the charged constructors, bound to self: a cycle that would keep
            # every decoded object (a 1 MB image) alive until the garbage collector runs, and
            # each new frame's buffers would come from fresh pages (3x slower decoding).
            self.memo.clear()
            self.stack.clear()
            self.metastack.clear()
        raise EOFError

    def find_class(self, module: str, name: str) -> Any:
        return self.resolve(self._allowed, module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not part of the protocol")

class _Unmetered(_Constructors):
    """The charged constructors for the C fast path: its frames' charges were added up when
    their skeleton was learned (skeleton_cache), so nothing is counted again. Module-level, so
    the C unpickler's memo holds no reference back to the unpickler (see load's finally)."""

    def charge(self, nbytes: int) -> None:
        pass

    # numpy's own pickles create each array empty and fill it in with BUILD.
    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is _NDArrayToken and type(shape) is tuple and shape == (0,):
            return np.ndarray.__new__(np.ndarray, shape, _as_dtype(dtype))
        return super()._reconstruct(subtype, shape, dtype)


def _fast_allow_list(allowed: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """`allowed` for the C fast path, charged entries bound once. numpy.empty (the portable
    form, ~200 calls in a batched reply) is numpy's own: every call in a frame of a learned
    skeleton has the arguments the checked `_empty` accepted for that skeleton (tuples of ints
    and dtypes from the skeleton bytes; a byte string there is refused as a shape or dtype)."""
    fast = {key: getattr(_UNMETERED, entry) if type(entry) is _Charged else entry
            for key, entry in allowed.items()}
    fast[("numpy", "empty")] = np.empty
    return fast


class _FastResolver:
    """find_class for the C fast path: a dict look-up after pickle's Python 2 name mapping."""

    def __init__(self, allowed: dict[tuple[str, str], Any]) -> None:
        self._allowed = _fast_allow_list(allowed)

    def __call__(self, module: str, name: str) -> Any:
        module, name = python3_name(module, name)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused global {module}.{name}") from None


_UNMETERED = _Unmetered()
_FAST_RESOLVERS = {True: _FastResolver(_WITH_WIRE_TYPES), False: _FastResolver(_ALWAYS_ALLOWED)}
# One cache per allow-list: a skeleton accepted with the wire types proves nothing without them.
_SKELETONS = {True: SkeletonCache(), False: SkeletonCache()}


def fast_decodes() -> int:
    """How many frames the fast path (the C unpickler or a frame template) has decoded in this
    process (statistics, tests)."""
    return sum(cache.hits for cache in _SKELETONS.values())


def template_decodes() -> int:
    """How many of those a frame template rebuilt (statistics, tests)."""
    return sum(cache.rebuilt for cache in _SKELETONS.values())


def safe_loads(data: bytes | bytearray | memoryview, *, allow_wire_types: bool = True,
               budget: int | None = None, fast_path: bool = True, alias: bool = False) -> Any:
    """Unpickle untrusted bytes, admitting only the allow-list above.

    Raises UnsafePickleError when the pickle names anything outside it, DecodeBudgetExceeded
    (a subclass) when it builds more than `budget` bytes (default: `decode_budget` of its
    length), and other pickle.UnpicklingError / ValueError / TypeError / EOFError for malformed
    data. With `allow_wire_types=False` only containers, numbers and arrays decode (stats files).

    A frame whose skeleton (everything but its array data and timestep) equals that of a frame
    this decoder already accepted is decoded by the C unpickler with the same allow-list; see
    skeleton_cache for why that is the same decode, ~5-20x faster. Requests and replies of the
    shapes clients and the server send are rebuilt from their holes instead, ~2-3x faster again
    (frame_templates). `fast_path=False` decodes with the pure-Python unpickler only, learning
    nothing (for comparisons).

    `alias=True` lets large arrays of such a rebuilt value be views of `data` (when it is
    writable) instead of copies: only for a caller that does not reuse `data` while they live.
    """
    view = memoryview(data).cast("B")
    budget = decode_budget(view.nbytes) if budget is None else budget
    cache = _SKELETONS[allow_wire_types]
    resolver = _FAST_RESOLVERS[allow_wire_types]
    if fast_path:
        frame = np.frombuffer(view, np.uint8)
        skeleton = cache.find(frame, budget)
        if skeleton is not None:
            template = skeleton.template
            if template is None:
                return c_loads(_ViewReader(view), resolver)
            cache.rebuilt += 1
            return template.rebuild(frame, alias and not view.readonly)
    reader = _ViewReader(view)
    unpickler = _RestrictedUnpickler(reader, allow_wire_types, budget)
    result = unpickler.load()
    if fast_path and cache.wants(reader.size):
        skeleton = cache.learn(reader.view, unpickler.budget - unpickler.left)
        if skeleton is not None:
            skeleton.template = learn_template(
                skeleton.holes, reader.view, lambda marked: c_loads(_ViewReader(marked), resolver))
    return result


class _ViewReader:
    """A read-only file over the frame buffer, without copying it first.

    Copying a 1 MB frame to bytes and then reading its image back out of a BytesIO makes two
    fresh 1 MB allocations per request, which glibc serves with new mmaps: ~700 us of page
    faults against ~60 us for reading straight out of the (reused) frame buffer.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = self.view = memoryview(data).cast("B")
        self.size = len(self._view)
        self._pos = 0
        self._text: bytes | None = None

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else min(self._pos + n, len(self._view))
        chunk = bytes(self._view[self._pos:end])
        self._pos = end
        return chunk

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = min(len(buffer), len(self._view) - self._pos)
        buffer[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def readline(self) -> bytes:
        # Only the text opcodes of protocols 0 and 1 read lines; a searchable copy is made once.
        if self._text is None:
            self._text = bytes(self._view)
        end = self._text.find(b"\n", self._pos)
        return self.read(-1 if end < 0 else end + 1 - self._pos)
