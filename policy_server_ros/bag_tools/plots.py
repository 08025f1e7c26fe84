"""PNG plots of an evaluation: predicted against recorded actions per dimension, and error by
chunk step. matplotlib with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from policy_server_ros.bag_tools.evaluate import Evaluation

MAX_CHUNKS_DRAWN = 12  # whole predicted chunks overlaid per dimension; more is unreadable


def plot_actions(ev: Evaluation, path: Path) -> Path:
    """One panel per action dimension: the recorded commands (black), the first step of every
    predicted chunk (blue dots), and a few whole predicted chunks (orange), over bag time."""
    dims = ev.predicted.shape[2]
    cols = 2 if dims > 1 else 1
    rows = (dims + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 1.8 * rows + 0.6), sharex=True,
                             squeeze=False)
    t0 = min(ev.command_stamps_ns.min(), ev.chunk_stamps_ns.min())
    cmd_t = (ev.command_stamps_ns - t0) / 1e9
    order = np.argsort(cmd_t)
    chunk_t = (ev.chunk_stamps_ns - t0) / 1e9
    period = ev.report["action_period_s"]
    steps_t = np.arange(ev.predicted.shape[1]) * period
    drawn = np.unique(np.linspace(0, len(chunk_t) - 1, min(MAX_CHUNKS_DRAWN, len(chunk_t)))
                      .astype(int))
    for d in range(rows * cols):
        ax = axes[d // cols][d % cols]
        if d >= dims:
            ax.axis("off")
            continue
        ax.plot(cmd_t[order], ev.commands[order, d], color="black", lw=1.0, zorder=3,
                label="recorded")
        for k in drawn:
            ax.plot(chunk_t[k] + steps_t, ev.predicted[k, :, d], color="tab:orange", lw=0.8,
                    alpha=0.7, label="predicted chunk" if k == drawn[0] else None)
        ax.plot(chunk_t, ev.predicted[:, 0, d], ".", color="tab:blue", ms=2.5,
                label="predicted step 0")
        ax.set_ylabel(ev.dim_names[d], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("bag time (s)")
    fig.suptitle(f"{ev.report['model_name_or_path']} on {Path(ev.report['bag']).name}: "
                 f"predicted vs recorded ({ev.report['action_topic']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_error_by_step(ev: Evaluation, path: Path) -> Path:
    """Mean absolute error (over dimensions and chunks) at each step of the chunk, and the
    per-dimension MAE over the whole chunk."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    per_step = np.array([np.nan if v is None else v for v in ev.report["per_step_mae"]],
                        dtype=float)
    left.plot(np.arange(per_step.size), per_step, color="tab:red")
    left.set_xlabel("chunk step")
    left.set_ylabel("MAE (mean over dimensions)")
    left.set_title("error by step of the chunk", fontsize=10)
    full = ev.report["horizons"][str(max(int(h) for h in ev.report["horizons"]))]
    right.bar(np.arange(len(full["mae"])), full["mae"], color="tab:gray")
    right.set_xticks(np.arange(len(full["mae"])), ev.dim_names, rotation=60, fontsize=7,
                     ha="right")
    right.set_ylabel("MAE over the whole chunk")
    right.set_title("error by action dimension", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
