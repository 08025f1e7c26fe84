"""A corpus of hostile pickles: code-execution gadgets, each of which would create a canary
file if it ever ran. Used by the security tests and by scripts/stress_socket.py."""

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
    """Every gadget in several pickle protocols (0 to 5), plus hand-written opcode streams."""
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
    return out
