"""Requests and replies rebuilt from their holes (frame_templates): the same value as the
unpickler's, for the shapes clients and the server send, and nothing else is rebuilt."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_skeleton_cache import _same

from benchmark.base import MetaAction, MetaObs
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from socket_bridge.portable_pickle import dumps
from socket_bridge.reply_encoder import ReplyEncoder
from socket_bridge.safe_unpickle import fast_decodes, safe_loads, template_decodes
from socket_bridge.skeleton_cache import skeleton_of


def _reply(batched: bool, seed: int, batch: int = 1, steps: int = 100) -> bytes:
    """What the server sends (its reply encoder), for random actions."""
    actions = np.random.default_rng(seed).normal(size=(batch, steps, 14)).astype(np.float32)
    return bytes(ReplyEncoder().encode(PolicyOutput(actions, batched=batched,
                                                    spec=ActionSpec(14, steps))))


@pytest.mark.parametrize(("batched", "batch"), [(False, 1), (True, 1), (True, 3)])
def test_a_learned_reply_is_rebuilt_as_the_unpickler_decodes_it(batched: bool, batch: int) -> None:
    safe_loads(_reply(batched, 0, batch))  # learns the skeleton and its template
    rebuilt = template_decodes()
    for seed in (1, 2, 3):
        data = _reply(batched, seed, batch)
        decoded = safe_loads(data)
        assert _same(decoded, safe_loads(data, fast_path=False))
        assert _same(decoded, pickle.loads(data))  # our own server's bytes: a trusted check
    assert template_decodes() == rebuilt + 3


def test_rebuilt_actions_are_separate_writable_rows() -> None:
    safe_loads(_reply(False, 0))
    first = safe_loads(_reply(False, 1))
    second = safe_loads(_reply(False, 2))
    expected = pickle.loads(_reply(False, 2))
    first[0].action[:] = 7  # a client may change its copy in place
    assert not np.shares_memory(first[0].action, second[0].action)
    assert (first[1].action != 7).all()
    assert all(np.array_equal(a.action, b.action) for a, b in zip(second, expected, strict=True))


def _shared_array_reply(seed: int) -> bytes:
    action = np.random.default_rng(seed).normal(size=14).astype(np.float32)
    return dumps([MetaAction(action=action), MetaAction(action=action)])  # one array, twice


@pytest.mark.parametrize("frames", [
    pytest.param([_shared_array_reply(s) for s in range(3)], id="one array in two actions"),
    pytest.param([dumps([MetaAction(action=np.array([s], np.int16))]) for s in range(3)],
                 id="arrays under 4 bytes"),
    pytest.param([dumps([MetaAction(action=np.full(2, s, np.float32)),
                         MetaAction(action=np.full(2, s, np.float64))]) for s in range(3)],
                 id="arrays of two dtypes"),
    pytest.param([dumps([MetaAction(action=np.full(4, s, np.float32), ctrl_space=b"ee")])
                  for s in range(3)], id="a bytes field"),
    pytest.param([dumps(MetaObs(state=np.full(14, s, np.float32), raw_lang=[b"x"]))
                  for s in range(3)], id="a request holding a list"),
    pytest.param([dumps(MetaObs(state=np.full(3, s, np.uint8))) for s in range(3)],
                 id="a request with an array under 4 bytes"),
])
def test_other_shapes_keep_the_c_unpickler(frames: list[bytes]) -> None:
    safe_loads(frames[0])
    hits, rebuilt = fast_decodes(), template_decodes()
    for data in frames[1:]:
        assert _same(safe_loads(data), safe_loads(data, fast_path=False))
    assert fast_decodes() == hits + 2, "these frames should still take the C fast path"
    assert template_decodes() == rebuilt


def test_changed_array_bytes_rebuild_like_the_checked_decoder() -> None:
    """Any bytes in the holes (NaNs, infinities, garbage) give the checked decoder's value."""
    seed = _reply(True, 0, batch=2)
    safe_loads(seed)
    base = np.frombuffer(seed, np.uint8)
    skeleton = skeleton_of(memoryview(seed), 0)
    assert skeleton is not None and len(skeleton.holes) == 200  # one per action row
    holes = np.concatenate([np.arange(start, end) for start, end in skeleton.holes])
    rng = np.random.default_rng(5)
    rebuilt = template_decodes()
    for _ in range(50):
        mutated = base.copy()
        at = rng.choice(holes, size=40, replace=False)
        mutated[at] = rng.integers(0, 256, at.size)
        data = mutated.tobytes()
        assert _same(safe_loads(data), safe_loads(data, fast_path=False))
    assert template_decodes() == rebuilt + 50


def _request(protocol: int | str, form: str, t: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """One client's request of control step `t`: ILStudio's (batched, timestep np.array([[t]]))
    or the guide's (unbatched, timestep=t), pickled as that client does."""
    rng = np.random.default_rng(0)
    lead = (1,) if form == "array" else ()
    obs = MetaObs(state=rng.uniform(-1, 1, (*lead, 14)).astype(np.float32),
                  image=rng.integers(0, 256, (*lead, 2, 3, *size), dtype=np.uint8),
                  raw_lang="pick up the cube",
                  timestep=np.array([[t]]) if form == "array" else t)
    return dumps(obs) if protocol == "portable" else pickle.dumps(obs, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5, "portable"])
@pytest.mark.parametrize("form", ["int", "array"])
def test_a_learned_request_is_rebuilt_as_the_unpickler_decodes_it(protocol: int | str,
                                                                   form: str) -> None:
    safe_loads(_request(protocol, form, 7))
    rebuilt = template_decodes()
    # Timesteps across the int opcodes' ranges: the opcode (and so the skeleton) changes at
    # 256 and 65536, and -1 is the signed BININT.
    steps = [0, 1, 255, 256, 65535, 65536, 2**31 - 1, -1, -(2**31)]
    for t in steps:
        data = _request(protocol, form, t)
        safe_loads(data)  # learns each opcode's skeleton once
        decoded = safe_loads(data)
        assert np.array_equal(decoded.timestep, t if form == "int" else [[t]])
        assert _same(decoded, safe_loads(data, fast_path=False))
    if protocol != 2:  # protocol 2 writes bytes as latin-1 text: no holes, no template
        assert template_decodes() >= rebuilt + len(steps)


def test_aliased_images_are_views_of_a_writable_frame_only() -> None:
    safe_loads(_request(4, "array", 0, (480, 640)))
    frame = bytearray(_request(4, "array", 50, (480, 640)))
    aliased = safe_loads(frame, alias=True)
    assert np.shares_memory(aliased.image, np.frombuffer(frame, np.uint8))
    assert not np.shares_memory(aliased.state, np.frombuffer(frame, np.uint8))  # small: copied
    copied = safe_loads(frame)
    assert not np.shares_memory(copied.image, np.frombuffer(frame, np.uint8))
    from_bytes = safe_loads(bytes(frame), alias=True)  # read-only input: copies, writable
    assert from_bytes.image.flags.writeable
    for decoded in (aliased, copied, from_bytes):
        assert _same(decoded, safe_loads(bytes(frame), fast_path=False))
