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
before anything is called. Sizes are bounded by the frame: no opcode makes the unpickler
allocate more than the pickle's own length (see _RestrictedUnpickler for the memo).
"""

from __future__ import annotations

import _compat_pickle
import math
import pickle
import re
import struct
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from benchmark.base import MetaAction, MetaObs

__all__ = ["UnsafePickleError", "safe_loads"]

# Upper bound for an array a pickle asks us to create *before* filling it. numpy's own pickles
# and ours ask for shape (0,) and then set the data (bounded by the frame); a large shape here
# could only be an attempt to make us allocate (an object array would even be filled).
MAX_ARRAY_BYTES = 1 << 20


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle referenced something outside the allow-list; nothing it named was called."""


def _check_nbytes(shape: Any, dtype: np.dtype) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnsafePickleError(f"invalid array shape {shape!r}")
    if math.prod(shape) * max(dtype.itemsize, 1) > MAX_ARRAY_BYTES:
        raise UnsafePickleError(f"array of shape {shape} and dtype {dtype} is too large")
    return shape


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


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy's own pickles: _reconstruct(ndarray, (0,), b'b') followed by __setstate__.
    if subtype is not _NDArrayToken:
        raise UnsafePickleError("_reconstruct called with a subtype other than numpy.ndarray")
    dt = _as_dtype(dtype)
    return np.ndarray.__new__(np.ndarray, _check_nbytes(shape, dt), dt)


def _safe_empty(shape: Any, dtype: Any) -> np.ndarray:
    # The portable form written by socket_bridge.portable_pickle: empty(...) then __setstate__.
    dt = _as_dtype(dtype)
    return np.empty(_check_nbytes(shape, dt), dt)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # numpy's protocol-5 form; the buffer's own size bounds the array.
    dt = _as_dtype(dtype)
    if order not in ("C", "F", "A", "K"):
        raise UnsafePickleError(f"invalid array order {order!r}")
    shape = _check_nbytes(shape, dt)
    return np.frombuffer(buf, dt).reshape(shape, order=order)


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


def _safe_codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocols 0-2 pickle bytes as _codecs.encode(str, 'latin1'); no other codec is needed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only as the latin1 bytes form")
    return text.encode("latin1")


def _safe_bytes_like(kind: type) -> Callable[..., Any]:
    def build(source: Any = b"", *args: Any) -> Any:
        # bytearray(10**10) would allocate and zero 10 GB: only copies of data are allowed.
        if isinstance(source, int):
            raise UnsafePickleError(f"{kind.__name__}(int) is not allowed")
        return kind(source, *args) if args else kind(source)

    return build


def _numpy_scalar_types() -> dict[tuple[str, str], Any]:
    names = ["bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "complex64", "complex128", "str_", "bytes_"]
    found = {("numpy", name): getattr(np, name) for name in names if hasattr(np, name)}
    found[("numpy", "bool")] = np.bool_  # numpy 2 names the type numpy.bool
    return found


_NUMPY_PATHS = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_PATHS = ("numpy.core.numeric", "numpy._core.numeric")

_ALWAYS_ALLOWED: dict[tuple[str, str], Any] = {
    **{(path, "_reconstruct"): _safe_reconstruct for path in _NUMPY_PATHS},
    **{(path, "scalar"): _safe_scalar for path in _NUMPY_PATHS},
    **{(path, "_frombuffer"): _safe_frombuffer for path in _NUMERIC_PATHS},
    ("numpy", "ndarray"): _NDArrayToken,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy", "empty"): _safe_empty,
    **_numpy_scalar_types(),
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): _safe_codecs_encode,
    ("builtins", "object"): object,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): _safe_bytes_like(bytearray),
    ("builtins", "bytes"): _safe_bytes_like(bytes),
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


def _check_array_state(state: Any) -> None:
    """ndarray.__setstate__ does not check that the data fits the shape for object arrays:
    numpy 2.4 segfaults on (1, (105,), dtype('O'), False, [x]). Check everything first."""
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
    elif not isinstance(data, (bytes, bytearray)) or len(data) != count * dtype.itemsize:
        raise UnsafePickleError("array data does not match its shape and dtype")


def _checked_bytearray8(unpickler: _RestrictedUnpickler) -> None:
    """BYTEARRAY8 without the eager allocation: the Python unpickler allocates (and zeroes) the
    declared length before reading, so 20 bytes could claim 1 GB. No claim may exceed the input."""
    (length,) = struct.unpack("<Q", unpickler.read(8))
    if length > unpickler.input_size:
        raise pickle.UnpicklingError(f"BYTEARRAY8 of {length} bytes in a pickle of "
                                     f"{unpickler.input_size}")
    data = bytearray(length)
    if unpickler.readinto(data) != length:
        raise pickle.UnpicklingError("pickle data was truncated")
    unpickler.append(data)


def _checked_build(unpickler: pickle._Unpickler) -> None:
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
        _check_array_state(state)
        inst.__setstate__(state)
    elif type(inst) in (MetaObs, MetaAction):
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise UnsafePickleError(f"{type(inst).__name__} state must be a dict of fields")
        vars(inst).update(state)
    else:
        raise UnsafePickleError(f"BUILD of {type(inst).__name__} is not allowed")


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, on purpose: CPython's C unpickler keeps its memo in an array
    that a PUT / LONG_BINPUT opcode with a large index resizes and zeroes, so a 9-byte pickle
    makes it allocate gigabytes (index 2**27: 2 GB, 2.7 s) before any global is looked up. The
    Python unpickler's memo is a dict. It costs ~35 us more per request (139 opcodes)."""

    dispatch: ClassVar[dict] = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: _checked_build,
                                pickle.BYTEARRAY8[0]: _checked_bytearray8}

    def __init__(self, file: _ViewReader, allow_wire_types: bool) -> None:
        super().__init__(file)
        self.input_size = file.size
        self._allowed = _WITH_WIRE_TYPES if allow_wire_types else _ALWAYS_ALLOWED

    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0-2 write Python 2 names (__builtin__.set, copy_reg._reconstructor).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not part of the protocol")


def safe_loads(data: bytes | bytearray | memoryview, *, allow_wire_types: bool = True) -> Any:
    """Unpickle untrusted bytes, admitting only the allow-list above.

    Raises UnsafePickleError when the pickle names anything outside it, and other
    pickle.UnpicklingError / ValueError / TypeError / EOFError for malformed data.
    With `allow_wire_types=False` only containers, numbers and arrays decode (stats files).
    """
    return _RestrictedUnpickler(_ViewReader(data), allow_wire_types).load()


class _ViewReader:
    """A read-only file over the frame buffer, without copying it first.

    Copying a 1 MB frame to bytes and then reading its image back out of a BytesIO makes two
    fresh 1 MB allocations per request, which glibc serves with new mmaps: ~700 us of page
    faults against ~60 us for reading straight out of the (reused) frame buffer.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
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
