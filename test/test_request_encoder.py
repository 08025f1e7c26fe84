"""PolicyClient's request templates (request_encoder): byte for byte what dump_chunks writes,
for every layout, from a template where it covers the layout."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.base import MetaObs
from socket_bridge.portable_pickle import dumps
from socket_bridge.request_encoder import RequestEncoder


def _obs(seed: int, batched: bool = True, timestep: object = 0, **fields: object) -> MetaObs:
    rng = np.random.default_rng(seed)
    lead = (1,) if batched else ()
    values = {"state": rng.uniform(-1, 1, (*lead, 14)).astype(np.float32),
              "image": rng.integers(0, 256, (*lead, 2, 3, 120, 160), dtype=np.uint8),
              "raw_lang": "pick up the cube", "timestep": timestep, **fields}
    return MetaObs(**values)


LAYOUTS = {
    "ILStudio's batched, array timestep": lambda s: _obs(s, timestep=np.array([[50 * s]])),
    "the guide's unbatched, int timestep": lambda s: _obs(s, batched=False, timestep=50 * s),
    "small image, depth, big-endian state": lambda s: _obs(
        s, image=np.full((1, 1, 3, 8, 8), s, np.uint8), depth=np.full((1, 1, 8, 8), s, ">f4"),
        state=np.arange(14, dtype=">f8")[None] * s),
    "bool and float64 parts, no language": lambda s: _obs(
        s, raw_lang="", state_joint=np.array([[s % 2 == 0] * 7]), state_ee=np.zeros((1, 7)) + s),
}


@pytest.mark.parametrize("make", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_templated_requests_are_dump_chunks_bytes(make) -> None:
    encoder = RequestEncoder()
    for seed in range(6):
        obs = make(seed)
        assert b"".join(encoder.encode(obs)) == dumps(obs)
    assert len(encoder._templates) == 1 and None not in encoder._templates.values()


@pytest.mark.parametrize("timestep", [0, 1, 255, 256, 65535, 65536, 2**31 - 1, -1, -(2**31)])
def test_every_timestep_opcode(timestep: int) -> None:
    encoder = RequestEncoder()
    for value in (timestep, timestep, timestep // 2 if timestep > 0 else timestep):
        obs = _obs(0, batched=False, timestep=value)
        assert b"".join(encoder.encode(obs)) == dumps(obs)


@pytest.mark.parametrize("obs", [
    pytest.param(_obs(0, timestep=2**40), id="a timestep past 32 bits"),
    pytest.param(_obs(0, state=np.asfortranarray(np.ones((2, 14), np.float32))), id="F order"),
    pytest.param(_obs(0, pc=np.array([None, 1], dtype=object)), id="an object array"),
    pytest.param(_obs(0, raw_lang=["a", "b"]), id="a list of instructions"),
    pytest.param(_obs(0, state=np.zeros((1, 0), np.float32)), id="an empty array"),
])
def test_other_layouts_are_pickled_directly(obs: MetaObs) -> None:
    encoder = RequestEncoder()
    for _ in range(2):
        assert b"".join(encoder.encode(obs)) == dumps(obs)
    assert not any(encoder._templates.values())


def test_large_arrays_are_sent_from_their_own_memory() -> None:
    encoder = RequestEncoder()
    encoder.encode(_obs(0))
    obs = _obs(1)
    chunks = encoder.encode(obs)
    assert any(isinstance(c, memoryview) and c.obj is obs.image for c in chunks)
