"""The portable pickler: large arrays go out from their own memory, in the same bytes as before."""

from __future__ import annotations

import io
import pickle
import socket
import threading
from typing import Any

import numpy as np
import pytest

from benchmark.base import MetaObs
from socket_bridge.framing import read_frame, write_frame
from socket_bridge.portable_pickle import dump_chunks, dumps
from socket_bridge.safe_unpickle import safe_loads


class _Reference(pickle.Pickler):
    """The portable form written the plain way: numpy's own state, data copied to bytes."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            return np.empty, ((0,), obj.dtype), obj.__reduce__()[2]
        return NotImplemented


def _reference(obj: object) -> bytes:
    out = io.BytesIO()
    _Reference(out, protocol=4).dump(obj)
    return out.getvalue()


def _values() -> dict[str, object]:
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (1, 2, 3, 120, 160), dtype=np.uint8)  # 115 kB: sent directly
    return {
        "request": MetaObs(state=rng.normal(size=(1, 14)).astype(np.float32), image=image,
                           depth=rng.normal(size=(1, 2, 120, 160)).astype(np.float32)),
        "one array twice, and a copy of the same size": [image, image, image.copy()],
        "Fortran order and views": [np.asfortranarray(image[0, 0]), image[0, :, :, ::2],
                                    image[0, 1]],
        "object array": np.array([{"a": image}, None], dtype=object),
    }


@pytest.mark.parametrize("name", list(_values()))
def test_bytes_are_the_plain_portable_form(name: str) -> None:
    value = _values()[name]
    assert dumps(value) == _reference(value)
    assert b"".join(dump_chunks(value)) == _reference(value)


def test_large_arrays_are_sent_from_their_own_memory() -> None:
    obs = _values()["request"]
    chunks = dump_chunks(obs)
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert [v.obj is a for v, a in zip(views, (obs.image, obs.depth), strict=True)] == [True, True]
    left, right = socket.socketpair()
    with left, right:
        writer = threading.Thread(target=write_frame, args=(left, chunks))
        writer.start()
        decoded = safe_loads(read_frame(right))
        writer.join()
    np.testing.assert_array_equal(decoded.image, obs.image)
    np.testing.assert_array_equal(decoded.depth, obs.depth)


def test_concurrent_dumps_of_same_sized_arrays_do_not_mix() -> None:
    from concurrent.futures import ThreadPoolExecutor

    arrays = [np.full((300, 300), i, np.uint8) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        for array, chunks in zip(arrays, pool.map(dump_chunks, arrays * 20), strict=False):
            np.testing.assert_array_equal(safe_loads(b"".join(chunks)), array)
