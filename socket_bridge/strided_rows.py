"""Equal-size rows at known offsets of a pickle frame, copied in or out as a few strided blocks.

The action rows of a reply (and so the holes of a learned reply frame) sit at a constant
stride: the pickle between two rows is the same opcodes each time. The stride changes only
where the pickler's memo indices grow by a byte, so a 100-step reply has two or three runs of
equal stride. Copying a run is one strided numpy assignment; an index array of every byte
(8 bytes of index per byte copied) costs more to read than the rows themselves.
"""

from __future__ import annotations

import numpy as np

# (offset of the run's first row, stride between its rows, index of its first row, row count)
Run = tuple[int, int, int, int]


def runs_of(offsets: list[int]) -> list[Run]:
    """`offsets` (of consecutive rows) as runs of equal, positive stride."""
    runs: list[Run] = []
    first = 0
    while first < len(offsets):
        last = first + 1  # the run is offsets[first:last]
        stride = offsets[last] - offsets[first] if last < len(offsets) else 1
        if stride <= 0:  # not after the previous row: a run of its own
            stride = 1
        else:
            while last < len(offsets) and offsets[last] - offsets[last - 1] == stride:
                last += 1
        runs.append((offsets[first], stride, first, last - first))
        first = last
    return runs


def _run_view(buffer: object, run: Run, width: int) -> np.ndarray:
    offset, stride, _, count = run
    return np.ndarray((count, width), np.uint8, buffer, offset, (stride, 1))


def scatter(buffer: bytearray, runs: list[Run], rows: np.ndarray) -> None:
    """Write `rows` ((n, width) uint8) to their offsets in `buffer`."""
    for run in runs:
        _run_view(buffer, run, rows.shape[1])[...] = rows[run[2]:run[2] + run[3]]


def gather(buffer: object, runs: list[Run], width: int) -> np.ndarray:
    """The rows at their offsets in `buffer`, as a new (n, width) uint8 array."""
    rows = np.empty((sum(run[3] for run in runs), width), np.uint8)
    for run in runs:
        rows[run[2]:run[2] + run[3]] = _run_view(buffer, run, width)
    return rows
