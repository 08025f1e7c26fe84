"""The safe decoder's C fast path: it decodes exactly what the checked decoder accepts, and only
frames shaped like one that decoder accepted."""

from __future__ import annotations

import contextlib
import math
import pickle
import pickletools
import resource
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_pickles import corpus
from test_robustness import _mutate, _seeds

from benchmark.base import MetaAction, MetaObs
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from socket_bridge.free_values import free_values
from socket_bridge.portable_pickle import dumps
from socket_bridge.protocol import reply_from_output
from socket_bridge.safe_unpickle import (
    DecodeBudgetExceeded,
    UnsafePickleError,
    fast_decodes,
    safe_loads,
)
from socket_bridge.skeleton_cache import HOLE_MIN_BYTES, skeleton_of


def _request(batched: bool, cameras: int = 1, seed: int = 0, timestep: int = -1) -> MetaObs:
    rng = np.random.default_rng(seed)
    lead = (1,) if batched else ()
    return MetaObs(state=rng.uniform(-1, 1, (*lead, 14)).astype(np.float32),
                   image=rng.integers(0, 256, (*lead, cameras, 3, 48, 64), dtype=np.uint8),
                   raw_lang="pick up the cube", timestep=timestep)


def _reply(batched: bool, seed: int = 0) -> list:
    actions = np.random.default_rng(seed).normal(size=(2 if batched else 1, 100, 14))
    return reply_from_output(PolicyOutput(actions=actions.astype(np.float32), batched=batched,
                                          spec=ActionSpec(action_dim=14, chunk_size=100)))


def _messages(seed: int) -> dict[str, bytes]:
    """Real traffic: client requests (protocols 4 and 5, what PolicyClient sends) and the
    server's replies, each kind built from `seed`."""
    out = {}
    for batched in (True, False):
        obs = _request(batched, seed=seed)
        for protocol in (4, 5):
            out[f"request p{protocol} batched={batched}"] = pickle.dumps(obs, protocol=protocol)
        ilstudio = _request(batched, seed=seed)  # ILStudio's client: timestep = np.array([[t]])
        ilstudio.timestep = np.array([[50 * seed]])
        out[f"ILStudio request batched={batched}"] = pickle.dumps(ilstudio, protocol=4)
        out[f"portable request batched={batched}"] = dumps(obs)
        out[f"reply batched={batched}"] = dumps(_reply(batched, seed))
    return out


def _parts(x: object, y: object) -> list[tuple[object, object]] | None:  # noqa: PLR0911
    """The pairs of parts to compare next, or None when x and y differ here already."""
    if type(x) is not type(y):
        return None
    if isinstance(x, np.ndarray):
        if (x.dtype, x.shape, x.flags.writeable) != (y.dtype, y.shape, y.flags.writeable):
            return None
        if x.dtype.hasobject:
            return [(list(x.ravel()), list(y.ravel()))]
        return [] if np.array_equal(x, y, equal_nan=x.dtype.kind in "fc") else None
    if isinstance(x, (MetaObs, MetaAction)):
        return [(vars(x), vars(y))]
    if isinstance(x, dict):
        return [(x[k], y[k]) for k in x] if list(x) == list(y) else None
    if isinstance(x, (list, tuple)):
        return list(zip(x, y, strict=True)) if len(x) == len(y) else None
    if callable(x):  # a pickle may return an allow-listed stand-in itself
        return [] if getattr(x, "__name__", x) == getattr(y, "__name__", y) else None
    both_nan = isinstance(x, float) and math.isnan(x) and math.isnan(y)
    return [] if x == y or both_nan else None


def _same(a: object, b: object) -> bool:
    """Deep equality of decoded messages, array types, dtypes, shapes and writability too.
    Iterative, and each pair compared once: fuzzed pickles decode to deeply nested and to
    self-referencing containers."""
    pending, seen = [(a, b)], set()
    while pending:
        x, y = pending.pop()
        if (id(x), id(y)) in seen:
            continue
        seen.add((id(x), id(y)))
        parts = _parts(x, y)
        if parts is None:
            return False
        pending.extend(parts)
    return True


@pytest.mark.parametrize("name", list(_messages(0)))
def test_fast_path_decodes_what_the_checked_decoder_decodes(name: str) -> None:
    safe_loads(_messages(0)[name])  # learns the skeleton
    data = _messages(1)[name]  # same shapes, other array contents
    hits = fast_decodes()
    fast = safe_loads(data)
    assert fast_decodes() == hits + 1, "a frame of a learned skeleton took the slow path"
    assert _same(fast, safe_loads(data, fast_path=False))


def test_holes_are_array_data_and_the_timestep_only() -> None:
    data = pickle.dumps(_request(True, timestep=-7), protocol=4)
    skeleton = skeleton_of(memoryview(data), 0)
    assert skeleton is not None
    holes = np.setdiff1d(np.arange(len(data)), skeleton.index)
    image = _request(True).image.tobytes()
    start = data.index(image)
    timestep = data.index(b"J" + struct.pack("<i", -7)) + 1  # BININT -7
    # The image's and the state's (56) bytes and the timestep's 4 are holes; nothing else is.
    assert set(range(start, start + len(image))) <= set(holes.tolist())
    assert set(range(timestep, timestep + 4)) <= set(holes.tolist())
    assert len(holes) == len(image) + 56 + 4
    assert HOLE_MIN_BYTES > 12  # longer than any dtype code, the one content the decoder reads


@pytest.mark.parametrize("protocol", [3, 4, 5, "portable"])
@pytest.mark.parametrize("form", ["int", "array"])
def test_a_changing_timestep_stays_on_the_fast_path(protocol: int | str, form: str) -> None:
    """What real clients send: ILStudio's client sets timestep = np.array([[t]]) on every
    request, the guide's example timestep=i."""
    def frame(t: int) -> bytes:
        obs = _request(form == "array", timestep=t)
        if form == "array":
            obs.timestep = np.array([[t]])
        return dumps(obs) if protocol == "portable" else pickle.dumps(obs, protocol=protocol)

    safe_loads(frame(0))
    hits = fast_decodes()
    for t in (50, 100, 150, 200):
        decoded = safe_loads(frame(t))
        assert np.array_equal(decoded.timestep, t if form == "int" else [[t]])
        assert _same(decoded, safe_loads(frame(t), fast_path=False))
    assert fast_decodes() == hits + 4


def test_other_changed_numbers_and_strings_leave_the_fast_path() -> None:
    safe_loads(pickle.dumps(_request(True, timestep=3), protocol=4))
    hits = fast_decodes()
    changed_lang = MetaObs(**{**vars(_request(True, timestep=3)), "raw_lang": "pick up the cubE"})
    decoded = safe_loads(pickle.dumps(changed_lang, protocol=4))
    assert decoded.raw_lang == changed_lang.raw_lang
    # A number that is not a wire type's timestep, e.g. the state's shape, is skeleton.
    obs = _request(True, timestep=3)
    obs.state = obs.state.reshape(2, 7)
    assert safe_loads(pickle.dumps(obs, protocol=4)).state.shape == (2, 7)
    assert fast_decodes() == hits


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    return b"\x8c" + bytes([len(value)]) + value.encode()


def _obs_with_array(timestep_op: bytes, shape: bytes) -> bytes:
    """A hand-written MetaObs pickle: timestep from `timestep_op`, state = numpy.empty(shape,
    'f4') filled in by BUILD."""
    array = (_global("numpy", "empty") + shape + _text("f4") + b"\x86R"
             + b"(K\x01" + shape + _global("numpy", "dtype") + _text("f4") + b"\x85R"
             + b"\x89C\x0c" + bytes(12) + b"tb")
    return (b"\x80\x04" + _global("benchmark.base", "MetaObs") + b")\x81}("
            + _text("timestep") + timestep_op + _text("state") + array + b"ub.")


def test_a_value_used_twice_is_not_free() -> None:
    """The timestep int is free only while nothing else uses it: memoized and fetched again as
    the state's shape, its value decides an allocation."""
    alone = _obs_with_array(b"K\x03", b"K\x03\x85")
    shared = _obs_with_array(b"K\x03\x94", b"h\x00\x85")  # MEMOIZE as 0, BINGET 0
    for data in (alone, shared):
        assert safe_loads(data, fast_path=False).state.shape == (3,)
    spans = free_values(list(pickletools.genops(alone)), alone)
    timestep = alone.index(b"K\x03") + 1
    assert (timestep, timestep + 1) in spans  # the control: used once, it is free
    assert len(spans) == 2  # and the array's 12 data bytes
    shared_spans = free_values(list(pickletools.genops(shared)), shared)
    assert shared_spans == [(s + 1, e + 1) for s, e in spans if s != timestep]
    # Changing the shared value changes the allocation; it must take the checked path.
    safe_loads(shared)
    hits = fast_decodes()
    bigger = shared.replace(b"K\x03\x94", b"K\x04\x94")
    with pytest.raises(UnsafePickleError, match="array data does not match"):
        safe_loads(bigger)
    assert fast_decodes() == hits


@pytest.mark.parametrize("key", ["raw_lang", "timestep2"])
def test_an_int_under_another_key_is_not_free(key: str) -> None:
    data = _obs_with_array(b"K\x03", b"K\x03\x85").replace(_text("timestep"), _text(key))
    safe_loads(data, fast_path=False)
    spans = free_values(list(pickletools.genops(data)), data)
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == 12  # the array data only


def test_the_budget_still_holds_for_learned_skeletons() -> None:
    data = pickle.dumps(_request(True, cameras=2), protocol=5)
    safe_loads(data)
    safe_loads(data)
    with pytest.raises(DecodeBudgetExceeded):
        safe_loads(data, budget=len(data) // 2)


def test_a_memo_index_bomb_is_never_learned() -> None:
    # A request that decodes (the checked decoder's memo is a dict) but puts memo entry 2**27:
    # the C unpickler would size its memo array for it (1 GiB) if the skeleton were learned.
    data = pickle.dumps(_request(True), protocol=4)
    frames = [pos for op, _, pos in pickletools.genops(data) if op.name == "FRAME"]
    for pos in reversed(frames):  # frames are optional; without them the tail is easy to edit
        data = data[:pos] + data[pos + 9:]
    assert data.endswith(b".")
    bomb = data[:-1] + b"Nr" + struct.pack("<I", 2**27) + b"0."
    assert type(safe_loads(bomb)) is MetaObs
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    for _ in range(3):
        assert type(safe_loads(bomb)) is MetaObs
    assert time.monotonic() - start < 2.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50  # MiB


def test_hostile_pickles_are_refused_with_every_skeleton_warm(tmp_path: Path) -> None:
    for data in _messages(0).values():
        safe_loads(data)
        safe_loads(data)
    canary = tmp_path / "canary"
    for name, data in corpus(canary).items():
        for _ in range(2):
            with pytest.raises(UnsafePickleError):
                safe_loads(data)
        assert not canary.exists(), name


def test_mutated_frames_decode_alike_on_both_paths(tmp_path: Path) -> None:
    """Differential fuzzing: with the seeds' skeletons learned, every mutation (anywhere, or
    only inside the long byte strings) decodes to the same value or fails with the same
    exception type as on the checked decoder alone."""
    seeds = _seeds(tmp_path / "canary") + list(_messages(0).values())
    for data in seeds:
        for _ in range(2):
            with contextlib.suppress(Exception):
                safe_loads(data)
    holed = [(data, np.setdiff1d(np.arange(len(data)), skeleton.index)) for data in seeds
             if (skeleton := skeleton_of(memoryview(data), 0)) is not None]
    assert len(holed) >= 10
    rng = np.random.default_rng(16)
    hits = fast_decodes()
    for i in range(6000):
        if i % 2:
            data = _mutate(seeds[rng.integers(len(seeds))], rng, seeds)
        else:  # flip bytes inside the long byte strings only: the fast path's own inputs
            seed, holes = holed[rng.integers(len(holed))]
            mutated = bytearray(seed)
            for at in rng.choice(holes, size=min(4, len(holes)), replace=False):
                mutated[at] = int(rng.integers(256))
            data = bytes(mutated)
        outcomes = []
        for fast_path in (True, False):
            try:
                outcomes.append(safe_loads(data, fast_path=fast_path))
            except Exception as exc:
                outcomes.append(type(exc))
        fast, checked = outcomes
        assert (fast is checked) if isinstance(fast, type) else _same(fast, checked), \
            f"mutation {i}: the fast path and the checked decoder disagree on {data[:200]!r}"
    # Half the mutations stay inside holes; some of their skeletons get evicted (more seeds
    # have skeletons than the cache's MAX_SKELETONS slots), so not all of them are fast.
    assert fast_decodes() - hits > 1500
    assert not (tmp_path / "canary").exists()
