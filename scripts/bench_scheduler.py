#!/usr/bin/env python3
"""Chunk scheduler benchmark: the cost of one control step and of taking one chunk, per mode.

    .venv/bin/python scripts/bench_scheduler.py          # writes results/bench_scheduler.json
    .venv/bin/python scripts/bench_scheduler.py --chunk 100 --dim 14 --steps 5000

A simulated control loop at 50 Hz (time advanced by hand, no sleeping): a new chunk every
`--query_every` steps, then step(); per-call times p50/p99 in microseconds. Ensemble mode keeps
up to chunk / query_every chunks covering each step, so its step cost grows with that number.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_harness import write_result  # noqa: E402

from policy_server_ros.chunk_scheduler import MODES, ChunkScheduler, SchedulerConfig  # noqa: E402


def run(mode: str, chunk: int, dim: int, steps: int, query_every: int) -> dict:
    scheduler = ChunkScheduler(SchedulerConfig(mode=mode, period_s=0.02, hold_timeout=0.1,
                                               max_command_step=[0.5], command_min=[-10.0],
                                               command_max=[10.0]))
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(16, chunk, dim))
    add_us, step_us = [], []
    for t in range(steps):
        now = t * scheduler.period_ns
        if t % query_every == 0:
            start = time.perf_counter()
            scheduler.add_chunk(chunks[t % 16], stamp_ns=now, received_ns=now)
            add_us.append((time.perf_counter() - start) * 1e6)
        start = time.perf_counter()
        scheduler.step(now)
        step_us.append((time.perf_counter() - start) * 1e6)
    return {name: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                   "calls": len(v)} for name, v in (("add_chunk_us", add_us),
                                                    ("step_us", step_us))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--dim", type=int, default=14)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--query_every", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_scheduler.json")
    args = parser.parse_args()
    result = {"machine": platform.platform(), "chunk": args.chunk, "dim": args.dim,
              "steps": args.steps, "cases": []}
    for mode in MODES:
        for every in args.query_every:
            case = {"mode": mode, "query_every": every,
                    **run(mode, args.chunk, args.dim, args.steps, every)}
            result["cases"].append(case)
            step, add = case["step_us"], case["add_chunk_us"]
            print(f"{mode:9s} query every {every:3d}: step p50 {step['p50']:7.1f} us "
                  f"p99 {step['p99']:7.1f} us | add_chunk p50 {add['p50']:7.1f} us "
                  f"p99 {add['p99']:7.1f} us")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
