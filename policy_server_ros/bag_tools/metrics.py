"""Open-loop scores: predicted chunks against the actions the robot commanded afterwards.

Step i of a chunk predicted from the observation stamped t is compared with the command nearest
in time to t + i * period, if one lies within `tolerance` of it (else that step is left out:
the bag ended, or commands were missing). Pure numpy, vectorized over chunks and steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def match_commands(chunk_stamps_ns: np.ndarray, steps: int, period_ns: int,
                   command_stamps_ns: np.ndarray, tolerance_ns: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Index of the command nearest to each chunk step, and whether it is within tolerance:
    two (K, steps) arrays. `command_stamps_ns` must be sorted."""
    targets = chunk_stamps_ns[:, None] + np.arange(steps, dtype=np.int64)[None, :] * period_ns
    if command_stamps_ns.size == 0:
        return np.zeros(targets.shape, np.int64), np.zeros(targets.shape, bool)
    right = np.clip(np.searchsorted(command_stamps_ns, targets), 1, command_stamps_ns.size - 1) \
        if command_stamps_ns.size > 1 else np.zeros(targets.shape, np.int64)
    left = np.maximum(right - 1, 0)
    nearer_left = np.abs(targets - command_stamps_ns[left]) <= np.abs(
        command_stamps_ns[right] - targets)
    index = np.where(nearer_left, left, right)
    valid = np.abs(command_stamps_ns[index] - targets) <= tolerance_ns
    return index, valid


def chunk_errors(predicted: np.ndarray, chunk_stamps_ns: np.ndarray, commands: np.ndarray,
                 command_stamps_ns: np.ndarray, *, period_ns: int, tolerance_ns: int,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """predicted (K, H, D) minus the matched commands (N, D): errors (K, H, D) and the
    valid-step mask (K, H)."""
    order = np.argsort(command_stamps_ns, kind="stable")
    stamps, commands = command_stamps_ns[order], commands[order]
    index, valid = match_commands(chunk_stamps_ns, predicted.shape[1], period_ns, stamps,
                                  tolerance_ns)
    matched = commands[index] if commands.size else np.zeros_like(predicted)
    return (predicted - matched).astype(np.float64), valid


def horizon_metrics(errors: np.ndarray, valid: np.ndarray,
                    horizons: Sequence[int]) -> dict[str, dict]:
    """Per-dimension MAE and RMSE over the first h steps of every chunk, for each horizon h
    (valid steps only), plus their means over dimensions and the number of steps scored."""
    out = {}
    for h in horizons:
        mask = valid[:, :h]
        n = int(mask.sum())
        picked = errors[:, :h][mask]  # (n, D)
        if n:
            mae = np.abs(picked).mean(axis=0)
            rmse = np.sqrt((picked ** 2).mean(axis=0))
        else:
            mae = rmse = np.full(errors.shape[2], np.nan)
        out[str(h)] = {"steps_scored": n, "mae": mae.tolist(), "rmse": rmse.tolist(),
                       "mae_mean": float(mae.mean()), "rmse_mean": float(rmse.mean())}
    return out


def per_step_mae(errors: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H,) mean absolute error at each chunk step, over chunks and dimensions (NaN where no
    step was scored)."""
    counts = valid.sum(axis=0)
    sums = (np.abs(errors).mean(axis=2) * valid).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of a series ({} when empty), for reports and summaries."""
    if not len(values):
        return {}
    arr = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max())}


def resolve_horizons(spec: Sequence[str], chunk: int) -> list[int]:
    """`1,10,full` -> sorted unique step counts, capped at the chunk length."""
    out = set()
    for raw in spec:
        item = raw.strip().lower()
        if item in ("full", "all"):
            out.add(chunk)
            continue
        try:
            value = int(item)
        except ValueError:
            raise ValueError(f"horizon {item!r} is not a whole number or 'full'") from None
        if value < 1:
            raise ValueError(f"horizon {value} must be at least 1")
        out.add(min(value, chunk))
    return sorted(out)
