"""Rows at offsets of a frame, copied in and out as runs of equal stride."""

from __future__ import annotations

import numpy as np
import pytest

from socket_bridge.strided_rows import gather, runs_of, scatter


@pytest.mark.parametrize("offsets", [[5], [5, 9], [0, 10, 20, 35, 50, 65, 66],
                                     [3, 8, 13, 20], [40, 20, 0], [7, 7, 30]])
def test_runs_cover_every_row_in_order(offsets: list[int]) -> None:
    runs = runs_of(offsets)
    rebuilt = [offset + stride * i for offset, stride, first, count in runs for i in range(count)]
    assert rebuilt == offsets
    assert [first for _, _, first, _ in runs] == \
        [sum(count for *_, count in runs[:i]) for i in range(len(runs))]
    assert all(stride > 0 and count >= 1 for _, stride, _, count in runs)


def test_a_regular_layout_is_one_run() -> None:
    assert runs_of(list(range(100, 100 + 125 * 98, 125))) == [(100, 125, 0, 98)]


@pytest.mark.parametrize("offsets", [[2, 12, 22, 40, 58, 76], [60, 30, 0]])
def test_scatter_then_gather_gives_the_rows_back_and_touches_nothing_else(
        offsets: list[int]) -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (len(offsets), 6), dtype=np.uint8)
    buffer = bytearray(b"\xee" * 100)
    runs = runs_of(offsets)
    scatter(buffer, runs, rows)
    np.testing.assert_array_equal(gather(bytes(buffer), runs, 6), rows)
    untouched = np.ones(100, bool)
    for offset in offsets:
        untouched[offset:offset + 6] = False
    assert set(np.frombuffer(buffer, np.uint8)[untouched]) == {0xEE}


def test_a_run_beyond_the_buffer_is_refused() -> None:
    with pytest.raises(ValueError, match="size of buffer"):
        gather(bytes(20), runs_of([0, 10, 20]), 6)
