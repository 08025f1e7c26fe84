#!/usr/bin/env python3
"""Policy runtime benchmark: the full-size example ACT through the inference engine.

    .venv/bin/python scripts/bench_policy.py              # writes results/bench_policy.json
    .venv/bin/python scripts/bench_policy.py --device cuda --modes fp32 bf16 compiled

For each mode (fp32 eager; bf16 autocast; torch.compile on top of fp32), in a fresh process:
per-observation latency p50/p99 for one client (submit -> actions, 480x640 camera + 14-D state),
then with several concurrent clients and dynamic batching, and the process's peak RSS. Finally
the time from starting `start_policy_server.py` to the first action received over TCP.
The model is untrained; speed does not depend on that.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_harness import run_clients, server_argv, start_process, write_result  # noqa: E402

from policy_server_ros.engine import InferenceEngine  # noqa: E402
from policy_server_ros.example_checkpoint import ensure_example_checkpoint  # noqa: E402
from policy_server_ros.policies import LoadOptions, load_policy  # noqa: E402
from socket_bridge.client import PolicyClient  # noqa: E402
from socket_bridge.wire_types import MetaObs  # noqa: E402

MODES = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
         "compiled": {"precision": "fp32", "compile": True}}


def observation(rng: np.random.Generator) -> MetaObs:
    return MetaObs(state=rng.normal(size=14),
                   image=rng.integers(0, 256, (1, 3, 480, 640), dtype=np.uint8))


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "n": len(ms)}


def run_mode(mode: str, ckpt: Path, device: str, requests: int, clients: int) -> dict:
    """One mode, measured in this (fresh) process."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    policy = load_policy(ckpt, LoadOptions(device=device, **MODES[mode]))
    engine = InferenceEngine(policy, max_batch=clients)
    engine.wait_ready()
    ready_s = time.perf_counter() - t0
    for _ in range(2):  # compile variants settle after the first calls
        engine.submit(observation(rng)).result()
    single = []
    for _ in range(requests):
        obs = observation(rng)
        start = time.perf_counter()
        engine.submit(obs).result()
        single.append((time.perf_counter() - start) * 1e3)

    concurrent: list[float] = []
    batch_sizes: list[float] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        local = np.random.default_rng(seed)
        for _ in range(max(1, requests // clients)):
            obs = observation(local)
            start = time.perf_counter()
            out = engine.submit(obs).result()
            with lock:
                concurrent.append((time.perf_counter() - start) * 1e3)
                batch_sizes.append(out.timings_ms["batch_size"])

    elapsed = run_clients(client, clients)
    engine.close()
    return {
        "mode": mode, "device": str(policy.device), "load_and_warmup_s": ready_s,
        "single_client": percentiles(single),
        "concurrent": {"clients": clients, **percentiles(concurrent),
                       "observations_per_s": len(concurrent) / elapsed,
                       "mean_batch": float(np.mean(batch_sizes))},
        "single_client_observations_per_s": 1e3 / float(np.mean(single)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def time_to_first_action(ckpt: Path, device: str) -> float:
    """Seconds from launching the server process to the first non-empty reply."""
    start = time.perf_counter()
    proc, port = start_process(server_argv("-m", str(ckpt), "--device", device))
    try:
        with PolicyClient("127.0.0.1", port, read_timeout=600) as client:
            reply = client.send_meta_obs(observation(np.random.default_rng(1)))
        assert reply, "empty reply"
        return time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--requests", type=int, default=30, help="timed requests per mode")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="an ACT checkpoint (default: the example, in the cache directory)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_policy.json")
    parser.add_argument("--one-mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ckpt = ensure_example_checkpoint(args.checkpoint)
    if args.one_mode:
        print(json.dumps(run_mode(args.one_mode, ckpt, args.device, args.requests, args.clients)))
        return 0

    rows = []
    for mode in args.modes:  # each in a fresh process: its own peak RSS, no shared caches
        out = subprocess.run([sys.executable, __file__, "--one-mode", mode, "--device",
                              args.device, "--requests", str(args.requests), "--clients",
                              str(args.clients), "--checkpoint", str(ckpt)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {mode}", file=sys.stderr)
    first_action_s = time_to_first_action(ckpt, args.device)

    print(f"example ACT (ALOHA sizes), one 480x640 camera, device {rows[0]['device']}, "
          f"{args.clients} concurrent clients in the batching rows")
    head = (f"{'mode':<10}{'p50 ms':>9}{'p99 ms':>9}{'obs/s':>8}{'conc p50':>10}{'conc p99':>10}"
            f"{'conc obs/s':>11}{'batch':>7}{'RSS MiB':>9}{'ready s':>9}")
    print(head)
    for r in rows:
        c = r["concurrent"]
        print(f"{r['mode']:<10}{r['single_client']['p50_ms']:>9.1f}"
              f"{r['single_client']['p99_ms']:>9.1f}{r['single_client_observations_per_s']:>8.2f}"
              f"{c['p50_ms']:>10.1f}{c['p99_ms']:>10.1f}{c['observations_per_s']:>11.2f}"
              f"{c['mean_batch']:>7.2f}{r['peak_rss_mib']:>9.0f}{r['load_and_warmup_s']:>9.1f}")
    print(f"start_policy_server.py to first action over TCP (fp32): {first_action_s:.1f} s")
    result = {"rows": rows, "time_to_first_action_s": first_action_s,
              "python": platform.python_version(), "machine": platform.machine()}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
