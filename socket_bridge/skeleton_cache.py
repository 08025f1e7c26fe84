"""The safe decoder's fast path: frames shaped exactly like one it has already accepted.

A client sends the same kind of observation every control step, and a server the same kind of
reply: the pickles differ only in the raw bytes of their arrays. The pure-Python restricted
unpickler (safe_unpickle) checks every opcode, at ~0.3-1 us each; CPython's C unpickler is 5-20x
faster but checks nothing. This module lets the C unpickler decode a frame only when the pure-
Python one has already decoded a frame of *the same skeleton* without objection:

* a frame's **skeleton** is all of its bytes except its **holes**: the payloads of its byte-
  string opcodes (BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8) of at least HOLE_MIN_BYTES
  bytes, and the free values that free_values finds (array data of any length, a wire type's
  `timestep` int, each used once). Opcodes, their length prefixes, other numbers, strings,
  global names, memo indices and anything after STOP are skeleton.
* Two frames with equal skeletons parse into the same opcode sequence (every opcode boundary is
  fixed by skeleton bytes), and the safe decoder runs them along the same path: none of its
  checks reads the content of a byte string that long (only lengths; the one content check,
  dtype codes given as bytes, accepts at most 12 bytes), nor of a free value (see
  free_values), so the same names are resolved to the same checked stand-ins, the same BUILD
  states pass the same checks, and the same allocation charges add up to the same total.
* So a frame whose skeleton equals an accepted one's is decoded by the C unpickler with the
  same restricted `find_class` (and no persistent ids). The two things the C unpickler does
  differently are ruled out when the skeleton is learned: its memo is an array sized by the
  largest memo index (learned skeletons have no index above their opcode count), and its BUILD
  calls numpy's unchecked `__setstate__` (learned BUILDs passed the checks, and the states of a
  matching frame differ only in hole contents, which those checks do not read).
* The allocation budget is kept: a skeleton remembers what its decode was charged, and a call
  with a smaller budget takes the pure-Python path (which refuses it).

An incrementing `timestep` (an int, or ILStudio's np.array([[t]])) stays on the fast path.
Frames whose other numbers or strings change between requests (a new instruction) have new
skeletons and take the pure-Python path; a cache slot is only replaced after
REPLACE_AFTER_MISSES consecutive mismatches, so such traffic costs one comparison more than
before, not a relearning each time.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from socket_bridge.free_values import free_values

# Longer than any dtype code the safe decoder reads from bytes (12 characters), the one place
# where it looks at a byte string's content rather than its length.
HOLE_MIN_BYTES = 16
# The byte-string opcodes whose payloads may be holes, and the size of their length field.
_HOLE_OPCODES = {"BINBYTES": 4, "SHORT_BINBYTES": 1, "BINBYTES8": 8, "BYTEARRAY8": 8}
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
REPLACE_AFTER_MISSES = 8
MAX_SKELETONS = 16
# A frame with more skeleton bytes than this (a 100-step reply has ~7 kB, a batch of 8 ~50 kB)
# is not learned: its index would cost 8 bytes per byte, and hostile frames must not fill memory.
MAX_SKELETON_BYTES = 128 << 10


@dataclass
class Skeleton:
    """An accepted frame's shape: its length, the positions of its skeleton bytes and their
    values, and what its decode was charged."""

    size: int
    index: np.ndarray  # positions of the skeleton bytes, ascending
    values: bytes  # the frame's bytes at those positions
    charged: int
    holes: list[tuple[int, int]]  # (start, end) of each hole, ascending
    misses: int = 0
    # A faster decode than the C unpickler's for this skeleton, when frame_templates has one.
    template: Any = None

    def matches(self, frame: np.ndarray) -> bool:
        return frame.size == self.size and frame[self.index].tobytes() == self.values


def skeleton_of(data: memoryview, charged: int) -> Skeleton | None:
    """The skeleton of a frame the safe decoder accepted (charged `charged` bytes), or None
    when its C decoding could differ from the safe one (a memo index beyond the opcode count)
    or it has no hole worth skipping."""
    raw = bytes(data)
    holes = []
    try:
        ops = list(pickletools.genops(io.BytesIO(raw)))
    except Exception:  # genops reads some streams the unpicklers accept differently: skip
        return None
    for count, (opcode, arg, pos) in enumerate(ops, 1):
        if opcode.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg < count):
            return None
        width = _HOLE_OPCODES.get(opcode.name)
        if width is not None and len(arg) >= HOLE_MIN_BYTES:
            start = pos + 1 + width
            holes.append((start, start + len(arg)))
    holes = sorted(set(holes + free_values(ops, raw)))  # a long byte string may be free too
    if not holes or len(raw) - sum(end - start for start, end in holes) > MAX_SKELETON_BYTES:
        return None
    mask = np.ones(len(raw), dtype=bool)
    for start, end in holes:
        mask[start:end] = False
    index = np.flatnonzero(mask)  # intp: numpy gathers with it uncast
    frame = np.frombuffer(raw, np.uint8)
    return Skeleton(len(raw), index, frame[index].tobytes(), charged, holes)


class SkeletonCache:
    """Accepted skeletons by frame length; thread-safe, at most MAX_SKELETONS of them."""

    def __init__(self) -> None:
        self._by_size: dict[int, Skeleton] = {}
        self._lock = threading.Lock()
        self.hits = 0  # frames found to match (approximate under concurrency: statistics only)
        self.rebuilt = 0  # of those, rebuilt from a frame template (statistics too)

    def find(self, frame: np.ndarray, budget: int) -> Skeleton | None:
        """The accepted skeleton `frame` matches, if its decode fits `budget`."""
        skeleton = self._by_size.get(frame.size)
        if skeleton is None:
            return None
        if skeleton.matches(frame):
            skeleton.misses = 0
            if skeleton.charged > budget:
                return None
            self.hits += 1
            return skeleton
        skeleton.misses += 1
        return None

    def wants(self, size: int) -> bool:
        """Whether an accepted frame of `size` bytes should be learned: no skeleton of that
        size yet, or the one there stopped matching a while ago."""
        skeleton = self._by_size.get(size)
        return skeleton is None or skeleton.misses >= REPLACE_AFTER_MISSES

    def learn(self, data: memoryview, charged: int) -> Skeleton | None:
        """Learn the skeleton of an accepted frame; it, or None when it has none."""
        skeleton = learned = skeleton_of(data, charged)
        with self._lock:
            if skeleton is None:
                # Remember the refusal as a skeleton that never matches, so a stream of such
                # frames is not walked again each time.
                skeleton = Skeleton(len(data), np.zeros(0, np.intp), b"\x00", charged, [])
            if len(self._by_size) >= MAX_SKELETONS and len(data) not in self._by_size:
                self._by_size.pop(next(iter(self._by_size)))
            self._by_size[len(data)] = skeleton
        return learned


def c_loads(reader: Any, find_class: Any) -> Any:
    """Decode with CPython's C unpickler, names resolved by `find_class` (the restricted one)."""
    unpickler = _CUnpickler(reader)
    unpickler.resolve = find_class
    return unpickler.load()


class _CUnpickler(pickle.Unpickler):
    resolve: Any

    def find_class(self, module: str, name: str) -> Any:
        return self.resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of the protocol")
