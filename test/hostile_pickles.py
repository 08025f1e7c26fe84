"""A corpus of hostile pickles: code-execution gadgets, each of which would create a canary
file if it ever ran, and memory amplifiers, small pickles that build large objects. Used by the
security and robustness tests and by scripts/stress_socket.py."""

from __future__ import annotations

import builtins
import codecs
import functools
import importlib
import io
import operator
import os
import pickle
import pickletools
import subprocess
from pathlib import Path

import numpy as np

from benchmark.base import MetaAction, MetaObs


class Reduce:
    """Pickles as `func(*args)`: the classic reduce gadget."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _module(name: str) -> Reduce:
    return Reduce(importlib.import_module, name)


def gadgets(canary: Path) -> dict[str, object]:
    """Objects whose unpickling would write `canary` (or run a shell that does)."""
    shell = f"touch {canary}"
    path = str(canary)
    return {
        "os.system": Reduce(os.system, shell),
        "os.popen": Reduce(os.popen, shell),
        "posix.system via getattr": Reduce(getattr, _module("posix"), "system"),
        "subprocess.Popen": Reduce(subprocess.Popen, ["touch", path]),
        "subprocess.check_call": Reduce(subprocess.check_call, ["touch", path]),
        "builtins.eval": Reduce(builtins.eval, f"open({path!r}, 'w')"),
        "builtins.exec": Reduce(builtins.exec, f"open({path!r}, 'w').close()"),
        "builtins.open": Reduce(builtins.open, path, "w"),
        "builtins.__import__": Reduce(builtins.__import__, "os"),
        "builtins.getattr(os, system)": Reduce(getattr, _module("os"), "system"),
        "importlib.import_module": _module("os"),
        "pickle.loads (nested)": Reduce(pickle.loads, pickle.dumps(Reduce(os.system, shell))),
        "codecs.open": Reduce(codecs.open, path, "w"),
        "_codecs.encode non-latin1": Reduce(codecs.encode, "x", "rot13"),
        "functools.partial(os.system)": Reduce(functools.partial(os.system, shell)),
        "functools.reduce": Reduce(functools.reduce, os.system, [shell]),
        "operator.methodcaller": Reduce(operator.methodcaller("system", shell), _module("os")),
        "operator.attrgetter": Reduce(operator.attrgetter("system"), _module("os")),
        "numpy runstring": Reduce(np.testing._private.utils.runstring,
                                  f"open({path!r}, 'w')", {}),
        "bytearray bomb": Reduce(bytearray, 10**11),
        "in MetaObs.state": MetaObs(state=Reduce(os.system, shell)),
        "in MetaObs.image": MetaObs(image=Reduce(subprocess.Popen, ["touch", path])),
        "in MetaObs.raw_lang": MetaObs(raw_lang=Reduce(builtins.eval, f"open({path!r}, 'w')")),
        "in a numpy object array": MetaObs(state=np.array([Reduce(os.system, shell)],
                                                          dtype=object)),
        "in a dict in a list": [{"a": Reduce(os.system, shell)}],
        "in MetaAction.action": MetaAction(action=Reduce(os.system, shell)),
    }


def corpus(canary: Path) -> dict[str, bytes]:
    """Every gadget in several pickle protocols (0 to 5), plus hand-written opcode streams and
    the memory amplifiers."""
    out: dict[str, bytes] = {}
    for name, obj in gadgets(canary).items():
        for protocol in (0, 2, 5) if name in ("os.system", "subprocess.Popen",
                                               "in MetaObs.state") else (4,):
            out[f"{name} (protocol {protocol})"] = pickle.dumps(obj, protocol=protocol)
    for protocol in (1, 3):
        out[f"builtins.eval (protocol {protocol})"] = pickle.dumps(
            Reduce(builtins.eval, f"open({str(canary)!r}, 'w')"), protocol=protocol)
    # INST and OBJ opcodes call a class directly: here os.system via protocol-0 INST.
    out["INST opcode os.system"] = b"(S'" + f"touch {canary}".encode() + b"'\nios\nsystem\n."
    out["GLOBAL opcode subprocess.call"] = (
        b"csubprocess\ncall\n(]S'touch'\naS'" + str(canary).encode() + b"'\natR.")
    for data in out.values():
        pickletools.dis(data, out=io.StringIO())  # all well-formed pickles
    out.update({f"amplification: {name}": data for name, data in amplifiers().items()})
    return out


# --- memory amplification: small pickles that build large objects -------------------------
# Each stream is allowed, opcode by opcode, by the allow-list; what makes it hostile is how much
# memory it creates per byte of input: the same small construction repeated through the memo.

def _text(value: str) -> bytes:
    data = value.encode()
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else \
        b"X" + len(data).to_bytes(4, "little") + data


def _global(module: str, name: str) -> bytes:
    return _text(module) + _text(name) + b"\x93"


def _get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + index.to_bytes(4, "little")


def _int(value: int) -> bytes:
    return b"J" + value.to_bytes(4, "little", signed=True)


def _repeat_into_list(setup: bytes, step: bytes, count: int) -> bytes:
    """PROTO 4, `setup` (which memoizes what `step` refers to), then a list that `step` appends
    to `count` times: every object it makes stays alive until the end."""
    return b"\x80\x04" + setup + b"]" + step * count + b"."


def amplifiers(count: int = 16, text_size: int = 65536) -> dict[str, bytes]:
    """Hostile streams of memory amplification, each repeating its expensive step about
    `count` times (nested streams: 4096 x `count` opcodes); copied strings hold `text_size`.

    Before the decoder had an allocation budget, "object arrays via the memo" decoded 16 MiB
    from 268 bytes, and each stream here built 50 to 60,000 times its own size.
    """
    big_object_array = 131072  # 1 MiB of object pointers, the old per-array limit
    arrays = (_global("numpy.core.multiarray", "_reconstruct") + b"\x94"          # memo 0
              + _global("numpy", "ndarray") + b"\x94"                             # memo 1
              + _global("numpy", "dtype") + _text("O8") + b"\x89\x88\x87R\x94"    # memo 2
              + _int(big_object_array) + b"\x85\x94")                              # memo 3
    text = "x" * text_size
    codecs_setup = _global("_codecs", "encode") + b"\x94" + _text(text) + b"\x94" \
        + _text("latin1") + b"\x94"
    items = b"]\x94(" + b"".join(_int(i) for i in range(4096)) + b"e"              # memo 0
    sets = items + _global("builtins", "frozenset") + b"\x94"                       # memo 1
    scalars = items + _global("numpy", "float64") + b"\x94"                         # memo 1
    state = b"}\x94(" + b"".join(_text(f"f{i}") + b"N" for i in range(2048)) + b"u"  # memo 0
    wire = state + _global("benchmark.base", "MetaObs") + b"\x94"                   # memo 1
    return {
        "object arrays via the memo": _repeat_into_list(
            arrays, _get(0) + _get(1) + _get(3) + _get(2) + b"\x87Ra", count),
        "numpy.empty object arrays": _repeat_into_list(
            arrays + _global("numpy", "empty") + b"\x94",
            _get(4) + _get(3) + _get(2) + b"\x86Ra", count),
        "_codecs.encode copies of one string": _repeat_into_list(
            codecs_setup, _get(0) + _get(1) + _get(2) + b"\x86Ra", count * 16),
        "bytearray copies of one string": _repeat_into_list(
            _global("builtins", "bytearray") + b"\x94" + _text(text) + b"\x94"
            + _text("latin1") + b"\x94", _get(0) + _get(1) + _get(2) + b"\x86Ra", count * 16),
        "frozensets of one list": _repeat_into_list(
            sets, _get(1) + _get(0) + b"\x85Ra", count * 4),
        "numpy scalar types called on a list": _repeat_into_list(
            scalars, _get(1) + _get(0) + b"\x85Ra", count * 32),
        "wire types built from one big state": _repeat_into_list(
            wire, _get(1) + b")\x81" + _get(0) + b"ba", count * 8),
        "nested empty sets": b"\x80\x04" + b"\x8f" * (count * 4096) + b"N.",
        "nested marks": b"\x80\x04" + b"(" * (count * 4096) + b"N.",
        "nested one-tuples": b"\x80\x04N" + b"\x85" * (count * 4096) + b".",
        "memo flood": b"\x80\x04N" + b"\x94" * (count * 4096) + b".",
        "empty dicts": b"\x80\x04](" + b"}" * (count * 4096) + b"e.",
    }
