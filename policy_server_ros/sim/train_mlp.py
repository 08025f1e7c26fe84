"""Train the state-based transfer-cube MLP on the scripted demonstrations, on the CPU, and write
it as an ILStudio `mlp` checkpoint (config.json, model.safetensors, normalize.json, statistics)
that the policy server loads like any other.

State: the 14 joint positions and the cube pose (x, y, z, qx, qy, qz, qw), recorded by replaying
each demonstration's commands in the simulator; target: the next `chunk_size` commands. L1 loss
on z-scored actions (as ACT trains), Adam with cosine decay, Gaussian noise on the normalized
state so the policy learns to come back to the demonstrations from nearby states.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policy_server_ros.sim.demos import Demos, record_states

log = logging.getLogger("policy_server_ros.sim.train_mlp")

STATE_DIM, ACTION_DIM = 21, 14
# Dimensions that hardly move in the demonstrations (the cube's orientation while it rests) get
# at least this std, so a closed-loop state a little off the demonstrations is not amplified
# thousands of times by the z-score.
MIN_STATS_STD = 0.01


@dataclass(frozen=True)
class TrainConfig:
    chunk_size: int = 20
    hidden_dim: int = 256
    num_layers: int = 4
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    state_noise: float = 0.05  # std of the noise added to the normalized state
    time_limit_s: float = 20 * 60.0
    seed: int = 0


def chunk_targets(commands: np.ndarray, chunk: int) -> np.ndarray:
    """(T, 14) commands -> (T, chunk, 14): commands[t : t + chunk], the last one repeated past
    the end (the replay policy's `hold`)."""
    padded = np.concatenate([commands, np.repeat(commands[-1:], chunk - 1, axis=0)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, chunk, axis=0)  # (T, 14, chunk)
    return np.ascontiguousarray(windows.transpose(0, 2, 1))


def statistics(x: np.ndarray) -> dict[str, list[float]]:
    """ILStudio's per-dimension statistics of the rows of x."""
    return {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), MIN_STATS_STD).tolist(),
            "min": x.min(0).tolist(), "max": x.max(0).tolist(),
            "q01": np.quantile(x, 0.01, axis=0).tolist(),
            "q99": np.quantile(x, 0.99, axis=0).tolist()}


def train(demos: Demos, seeds: list[int], out: Path, config: TrainConfig) -> dict:
    """Train and write the checkpoint to `out`; returns a summary (also out/training.json)."""
    import torch  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    from policy_server_ros.checkpoint import CONFIG, WEIGHTS  # noqa: PLC0415
    from policy_server_ros.example_checkpoint import write_training_files  # noqa: PLC0415
    from policy_server_ros.policies.mlp.model import MLPConfig, MLPNetwork  # noqa: PLC0415

    started = time.perf_counter()
    states, replayed = record_states(demos, seeds)
    kept = [i for i, ok in enumerate(replayed) if ok]
    log.info("recorded %d demonstrations (%d succeed in this simulator) in %.1f s",
             len(seeds), len(kept), time.perf_counter() - started)
    x = np.concatenate([states[i] for i in kept])
    y = np.concatenate([chunk_targets(demos.commands[demos.index(seeds[i])], config.chunk_size)
                        for i in kept])
    stats = {"num_trajectories": len(kept), "num_transitions": len(x),
             "state": statistics(x), "action": statistics(y.reshape(-1, ACTION_DIM))}
    x_mean, x_std = (np.asarray(stats["state"][k], np.float32) for k in ("mean", "std"))
    y_mean, y_std = (np.asarray(stats["action"][k], np.float32) for k in ("mean", "std"))
    xn = torch.from_numpy((x - x_mean) / x_std)
    yn = torch.from_numpy((y - y_mean) / y_std)

    torch.manual_seed(config.seed)
    model_config = MLPConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM,
                             num_layers=config.num_layers, hidden_dim=config.hidden_dim,
                             activation="relu", dropout=0.0, chunk_size=config.chunk_size,
                             extra={"architectures": ["MLPPolicy"], "torch_dtype": "float32"})
    model = MLPNetwork(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(xn) / config.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(xn), generator=generator)
        total = 0.0
        for start in range(0, len(xn), config.batch_size):
            index = order[start:start + config.batch_size]
            inputs = xn[index] + config.state_noise * torch.randn(
                (len(index), STATE_DIM), generator=generator)
            loss = torch.nn.functional.l1_loss(model(inputs), yn[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        losses.append(total / len(xn))
        log.info("epoch %d/%d: L1 %.4f (%.0f s)", epoch, config.epochs, losses[-1],
                 time.perf_counter() - started)
        if time.perf_counter() - started > config.time_limit_s:
            log.warning("time limit reached after epoch %d", epoch)
            break

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS),
              metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(model_config.to_dict(), indent=2, sort_keys=True))
    write_training_files(out, "mlp", STATE_DIM, ACTION_DIM, stats=stats)
    summary = {"train_seeds": [seeds[i] for i in kept], "transitions": len(x),
               "epochs": epoch, "final_l1": losses[-1], "losses": losses,
               "train_time_s": time.perf_counter() - started,
               "config": config.__dict__, "torch_threads": torch.get_num_threads()}
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return summary
