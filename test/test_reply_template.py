"""Replies rebuilt from their array bytes (reply_template): the same value as the unpickler's,
for the shapes the server sends, and nothing else is rebuilt."""

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
    pytest.param([dumps(MetaObs(state=np.full(14, s, np.float32), timestep=s))
                  for s in range(3)], id="a request"),
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
