#!/usr/bin/env python3
"""LeRobot checkpoints on the CPU: LeRobot's ACT against ILStudio's ACT in one process, taking
turns, and LeRobot's Diffusion Policy at its default denoising steps.

    .venv/bin/python scripts/bench_lerobot.py            # writes results/bench_lerobot.json
    .venv/bin/python scripts/bench_lerobot.py --rounds 6 --per-round 5 --diffusion-requests 3

Both ACTs are the example checkpoints at their systems' default sizes on ALOHA's features (14-D
state and action, one 480x640 camera, ResNet-18, dim 512, 4 encoder layers, chunk 100). They
differ in the decoder: ILStudio's config has 7 decoder layers of which its inference runs the
first only; LeRobot's default has 1, and it runs all of them. Each round asks each policy
`per-round` observations in turn (the order alternates between rounds), one at a time through
the engine, so both see the same machine load; the ratio of their medians is the comparison.
LeRobot's Diffusion Policy: its defaults (U-Net 512/1024/2048, horizon 16, 8 actions kept,
100 DDPM steps, n_obs_steps 2) on the same features. Untrained, seeded weights; speed does not
depend on that.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_families import peak_rss_mib  # noqa: E402
from bench_harness import write_result  # noqa: E402

from policy_server_ros.engine import InferenceEngine  # noqa: E402
from policy_server_ros.example_checkpoint import main as write_example  # noqa: E402
from policy_server_ros.policies import LoadOptions, load_policy  # noqa: E402
from socket_bridge.wire_types import MetaObs  # noqa: E402

ACTS = {"ilstudio_act": "act", "lerobot_act": "lerobot_act"}


def _engine(folder: Path, family: str, device: str) -> InferenceEngine:
    if not folder.is_dir():
        write_example([str(folder), "--policy", family])
    engine = InferenceEngine(load_policy(folder, LoadOptions(device=device)), max_batch=1)
    engine.wait_ready()
    return engine


def _ask(engine: InferenceEngine, rng: np.random.Generator, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        obs = MetaObs(state=rng.normal(size=14).astype(np.float32),
                      image=rng.integers(0, 256, (1, 3, 480, 640), dtype=np.uint8))
        start = time.perf_counter()
        engine.submit(obs).result()
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def _summary(name: str, latencies: list[float], engine: InferenceEngine) -> dict:
    spec = engine.policy.spec
    return {"case": name, "requests": len(latencies), "chunk": spec.chunk_size,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "mean_ms": float(np.mean(latencies))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--diffusion-requests", type=int, default=3)
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder for the example checkpoints (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_lerobot.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoints or Path(tmp)
        engines = {name: _engine(folder / name, family, args.device)
                   for name, family in ACTS.items()}
        times: dict[str, list[float]] = {name: [] for name in engines}
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(engines)[::-1]
            for name in order:
                times[name] += _ask(engines[name], rng, args.per_round)
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        rows += [_summary(name, times[name], engines[name]) for name in engines]
        for engine in engines.values():
            engine.close()
        del engines
        start = time.perf_counter()
        engine = _engine(folder / "lerobot_diffusion", "lerobot_diffusion", args.device)
        ready_s = time.perf_counter() - start
        steps = len(engine.policy.sampler.timesteps)
        rows.append({**_summary("lerobot_diffusion", _ask(engine, rng, args.diffusion_requests),
                                engine), "denoising_steps": steps, "load_and_warmup_s": ready_s})
        engine.close()
    ratio = rows[1]["p50_ms"] / rows[0]["p50_ms"]
    print(f"LeRobot checkpoints, one observation (one 480x640 camera) at a time, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'case':<20}{'requests':>9}{'chunk':>7}{'p50 ms':>10}{'p99 ms':>10}")
    for row in rows:
        print(f"{row['case']:<20}{row['requests']:>9}{row['chunk']:>7}{row['p50_ms']:>10.1f}"
              f"{row['p99_ms']:>10.1f}")
    print(f"LeRobot ACT / ILStudio ACT, p50: {ratio:.2f}x (same rounds, taking turns); LeRobot "
          f"Diffusion: {rows[2]['denoising_steps']} DDPM steps")
    write_result(args.out, {"rows": rows, "lerobot_over_ilstudio_act_p50": ratio,
                            "peak_rss_mib": peak_rss_mib(), "python": platform.python_version(),
                            "machine": platform.machine(), "torch": torch.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
