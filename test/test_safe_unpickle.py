"""The restricted unpickler: admits the wire types and numpy, refuses everything else unrun."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import io
import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from hostile_pickles import amplifiers

from benchmark.base import MetaAction, MetaObs
from socket_bridge.safe_unpickle import (
    MAX_DECODE_BYTES,
    DecodeBudgetExceeded,
    UnsafePickleError,
    decode_budget,
    safe_loads,
)


def _obs() -> MetaObs:
    return MetaObs(state=np.linspace(0, 1, 14), image=np.arange(2 * 3 * 4 * 5, dtype=np.uint8)
                   .reshape(2, 3, 4, 5), depth=np.ones((2, 4, 5), np.float32), raw_lang="hi",
                   timestep=7)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_wire_types_round_trip_in_every_protocol(protocol: int) -> None:
    obs = safe_loads(pickle.dumps(_obs(), protocol=protocol))
    assert type(obs) is MetaObs and obs.raw_lang == "hi" and obs.timestep == 7
    np.testing.assert_array_equal(obs.image, _obs().image)
    np.testing.assert_array_equal(obs.state, _obs().state)
    reply = [MetaAction(action=np.arange(3, dtype=np.float32), gripper_continuous=True)]
    (action,) = safe_loads(pickle.dumps(reply, protocol=protocol))
    assert type(action) is MetaAction and action.gripper_continuous is True
    np.testing.assert_array_equal(action.action, reply[0].action)


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, (3, "x")], "b": {1, 2}, "c": frozenset({3}), "d": b"\x00\xff", "e": 1 + 2j,
     "f": bytearray(b"ab"), "g": None, "h": True},
    np.array([{"action": np.zeros(3, np.float32)}], dtype=object),
    np.float32(1.5), np.int64(-3), np.bool_(True),
    np.arange(12, dtype=np.float64).reshape(3, 4).T,  # Fortran-ordered
])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_containers_scalars_and_arrays_decode(value: object, protocol: int) -> None:
    decoded = safe_loads(pickle.dumps(value, protocol=protocol))
    assert repr(decoded) == repr(value)


def test_numpy_1x_module_paths_decode() -> None:
    # What a numpy 1.26 client writes: numpy.core.multiarray._reconstruct / scalar.
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps(array, protocol=2).replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in data
    np.testing.assert_array_equal(safe_loads(data), array)


class _Reduce:
    """Builds a pickle whose reduce calls `func(*args)`: the classic code-execution gadget."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile(canary: Path) -> dict[str, bytes]:
    touch = f"touch {canary}"
    return {
        "os.system": pickle.dumps(_Reduce(os.system, touch)),
        "posix.system": pickle.dumps(_Reduce(os.system, touch), protocol=0),
        "subprocess.Popen": pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(canary)])),
        "builtins.eval": pickle.dumps(_Reduce(builtins.eval, f"open({str(canary)!r}, 'w')")),
        "builtins.exec": pickle.dumps(_Reduce(builtins.exec, f"open({str(canary)!r}, 'w')")),
        "builtins.getattr": pickle.dumps(
            _Reduce(getattr, _Reduce(importlib.import_module, "os"), "system")),
        "nested in MetaObs": pickle.dumps(MetaObs(state=_Reduce(os.system, touch))),
        "arbitrary class": pickle.dumps(io.StringIO("x")),
    }


@pytest.mark.parametrize("name", list(_hostile(Path("/x"))))
def test_hostile_pickles_are_refused_before_running(tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    data = _hostile(canary)[name]
    with pytest.raises(UnsafePickleError, match="refused global"):
        safe_loads(data)
    assert not canary.exists(), "the gadget ran"


def test_bytearray_of_a_huge_size_is_refused() -> None:
    with pytest.raises(UnsafePickleError, match=r"bytearray\(int\)"):
        safe_loads(pickle.dumps(_Reduce(bytearray, 10**11)))


def test_ndarray_cannot_be_called_directly() -> None:
    with pytest.raises(TypeError):
        safe_loads(pickle.dumps(_Reduce(np.ndarray, (10**6, 10**6))))


def test_reconstruct_with_a_huge_shape_is_refused() -> None:
    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    with pytest.raises(UnsafePickleError, match="too large"):
        safe_loads(pickle.dumps(_Reduce(_reconstruct, np.ndarray, (10**6, 10**6), b"d")))


def test_a_pickle_cannot_mutate_numpy_dtype_singletons() -> None:
    # dtype(..., copy=False) + BUILD would change float32's byte order process-wide.
    payload = pickle.dumps(_Reduce(np.dtype, "f4", False, False))
    safe_loads(payload)
    assert np.dtype("f4") is np.dtype(np.float32) and np.dtype("f4").byteorder == "="


def test_stats_mode_refuses_wire_types() -> None:
    with pytest.raises(UnsafePickleError, match=r"benchmark\.base\.MetaObs"):
        safe_loads(pickle.dumps(MetaObs()), allow_wire_types=False)
    assert safe_loads(pickle.dumps({"mean": [1.0]}), allow_wire_types=False) == {"mean": [1.0]}


@pytest.mark.parametrize("opcodes", [
    b"\x80\x04N" + b"r" + (2**27).to_bytes(4, "little") + b".",  # LONG_BINPUT
    b"\x80\x04N" + b"r" + (2**31 - 1).to_bytes(4, "little") + b".",
    b"(Np" + str(2**30).encode() + b"\n.",  # protocol-0 PUT
])
def test_memo_index_bombs_allocate_nothing(opcodes: bytes) -> None:
    # CPython's C unpickler resizes and zeroes its memo array up to the index: 2 GB for 2**27.
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with contextlib.suppress(pickle.UnpicklingError):
        safe_loads(opcodes)
    assert time.monotonic() - start < 1.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50  # MiB


def test_bytearray8_cannot_claim_more_than_the_input() -> None:
    # The Python unpickler allocates the claimed length before reading: 1.2 GB from 20 bytes.
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(pickle.UnpicklingError, match="BYTEARRAY8 of 1284834432 bytes"):
        safe_loads(b"\x80\x05\x96" + (1284834432).to_bytes(8, "little") + b"xx.")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50


@pytest.mark.parametrize(("state", "message"), [
    ((1, (105,), np.dtype("O"), False, [1]), "object array data does not match"),  # numpy segfaults
    ((1, (4,), np.dtype("f4"), False, b"\x00" * 3), "does not match its shape and dtype"),
    ((1, (-1,), np.dtype("f4"), False, b""), "invalid array shape"),
])
def test_array_states_are_checked_before_numpy_sees_them(state, message) -> None:
    class ArrayWithState:  # pickles as numpy's own _reconstruct(...) + BUILD(state)
        def __reduce__(self):
            reconstruct, args, _ = np.zeros(1).__reduce__()
            return reconstruct, args, state

    with pytest.raises(UnsafePickleError, match=message):
        safe_loads(pickle.dumps(ArrayWithState(), protocol=2))


def test_dtype_states_other_than_numpys_own_are_refused() -> None:
    class ObjectDtypeWithFlags:  # the fuzzer's crash: an object dtype whose flags were changed
        def __reduce__(self):
            cls, args, state = np.dtype("O").__reduce__()
            return cls, args, (*state[:-1], 6)

    with pytest.raises(UnsafePickleError, match="is not object's own"):
        safe_loads(pickle.dumps(ObjectDtypeWithFlags()))
    big_endian = safe_loads(pickle.dumps(np.dtype(">f4")))
    assert big_endian == np.dtype(">f4")  # byte order is the one thing a state may choose


# --- the allocation budget ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(amplifiers()))
def test_memory_amplifiers_are_refused_within_their_budget(name: str) -> None:
    data = amplifiers()[name]
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError):
            safe_loads(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What the decoder built before it stopped: its budget, plus strings read from the input.
    assert peak <= decode_budget(len(data)) + 8 * len(data) + (64 << 10), \
        f"{name}: {len(data)} bytes built {peak / 2**20:.1f} MiB"


def test_the_budget_grows_with_the_frame_up_to_an_absolute_cap() -> None:
    assert decode_budget(0) < decode_budget(10_000) < decode_budget(1_000_000)
    assert decode_budget(64 << 20) == decode_budget(1 << 40) == MAX_DECODE_BYTES


def _batched_reply(batch: int, steps: int = 100) -> list:
    entries = []
    for t in range(steps):
        row = np.empty(batch, dtype=object)
        row[:] = [{"ctrl_space": "joint", "ctrl_type": "abs", "gripper_continuous": False,
                   "action": np.full(14, t, np.float32)} for _ in range(batch)]
        entries.append(row)
    return entries


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_real_messages_fit_their_budget_and_their_data_is_charged(protocol: int) -> None:
    rng = np.random.default_rng(protocol)
    request = MetaObs(state=np.zeros((1, 14), np.float32),
                      image=rng.integers(0, 256, (1, 2, 3, 480, 640), np.uint8))
    data = pickle.dumps(request, protocol=protocol)
    np.testing.assert_array_equal(safe_loads(data).image, request.image)
    with pytest.raises(DecodeBudgetExceeded, match="allocation budget of 1000000 bytes"):
        safe_loads(data, budget=1_000_000)  # 1.8 MB of images are more than 1 MB
    reply = safe_loads(pickle.dumps(_batched_reply(8), protocol=protocol))
    assert len(reply) == 100 and reply[99][7]["action"][0] == 99


def test_numpy_scalar_types_take_one_number_not_a_list() -> None:
    assert safe_loads(pickle.dumps(np.float32(1.5))) == np.float32(1.5)
    from socket_bridge.portable_pickle import dumps
    assert type(safe_loads(dumps(np.int16(-3)))) is np.int16
    with pytest.raises(UnsafePickleError, match="numpy.float64 takes one number"):
        safe_loads(amplifiers()["numpy scalar types called on a list"])


_RSS_PROBE = """
import resource, sys
sys.path.insert(0, "test")
from hostile_pickles import amplifiers
from socket_bridge.safe_unpickle import safe_loads
data = amplifiers(count=512)["object arrays via the memo"]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    safe_loads(data)
    outcome = "decoded"
except Exception as exc:
    outcome = type(exc).__name__
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(len(data), outcome, round(grown))
"""


def test_the_reported_amplifier_cannot_grow_the_process() -> None:
    # The review's pattern: one 1 MiB object array rebuilt through the memo, 512 times in 5 KB
    # (512 MiB resident before the budget). A fresh process, so ru_maxrss is this decode's.
    result = subprocess.run([sys.executable, "-c", _RSS_PROBE], cwd=REPO_ROOT, text=True,
                            capture_output=True, timeout=120, check=True)
    size, outcome, grown_mib = result.stdout.split()
    assert int(size) < 6000 and outcome == "DecodeBudgetExceeded", result.stdout
    assert int(grown_mib) < 16, f"resident memory grew by {grown_mib} MiB"
