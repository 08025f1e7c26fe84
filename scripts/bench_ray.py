#!/usr/bin/env python3
"""The Ray backend against the local engine, on this machine, in one run:

    .venv/bin/python scripts/bench_ray.py            # writes results/bench_ray.json

Engines: local (torch's default threads, and 1 thread, which is what one replica of 1 CPU gets),
Ray with 1 replica and Ray with 2 replicas (1 torch thread each), all on one in-process Ray
cluster on 127.0.0.1. Models: builtin:zero (no model cost: what Ray itself adds) and a small ACT
(ResNet-18 trunk, hidden 32, 10 steps, one 120x160 camera: real work). Load: `--clients`
threads, each sending its next observation when its reply arrives (engine.submit, so socket
costs, equal for all, are left out); throughput and p50/p99 latency per engine. The engines
take turns in `--rounds` rounds so drift hits all alike. Then the Ray path's added latency per
request: one client, sequential, builtin:zero, Ray (1 replica) p50 minus local p50.

What a 2-core machine can show: the per-request overhead of the Ray path, and that requests are
spread over replicas. It cannot show scaling: 2 replicas, the Ray processes and the clients
share the same 2 cores, so a second replica adds no compute (each replica is given 1 logical CPU
and one torch thread; the local engine runs with 2 threads).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_harness import run_clients, write_result  # noqa: E402

IMAGE_HW = (120, 160)


def _observations(count: int, seed: int = 0) -> list:
    from socket_bridge.wire_types import MetaObs  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    return [MetaObs(state=rng.normal(size=14),
                    image=rng.integers(0, 256, (1, 3, *IMAGE_HW), dtype=np.uint8))
            for _ in range(count)]


def drive(engine, clients: int, per_client: int, observations: list) -> dict:
    """`clients` threads, closed loop; throughput (requests/s) and latency percentiles (ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    failures = [0]

    def client(i: int) -> None:
        mine = []
        for k in range(per_client):
            obs = observations[(i * per_client + k) % len(observations)]
            start = time.perf_counter()
            try:
                engine.submit(obs).result(60)
            except Exception:
                failures[0] += 1
            mine.append((time.perf_counter() - start) * 1e3)
        with lock:
            latencies.extend(mine)

    elapsed = run_clients(client, clients)
    return {"requests": len(latencies), "seconds": elapsed, "failures": failures[0],
            "latencies_ms": latencies}


def summarize(runs: list[dict]) -> dict:
    latencies = np.concatenate([r["latencies_ms"] for r in runs])
    requests = sum(r["requests"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    return {"requests": int(requests), "failures": int(sum(r["failures"] for r in runs)),
            "throughput_rps": requests / seconds,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--zero_requests", type=int, default=40, help="per client per round")
    parser.add_argument("--act_requests", type=int, default=6, help="per client per round")
    parser.add_argument("--sequential", type=int, default=150,
                        help="requests per engine per round for the added-latency measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_ray.json")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray  # noqa: PLC0415 - the [ray] extra
    import torch  # noqa: PLC0415

    from policy_server_ros.engine import InferenceEngine  # noqa: PLC0415
    from policy_server_ros.engine_backends import RayOptions  # noqa: PLC0415
    from policy_server_ros.example_checkpoint import (  # noqa: PLC0415
        small_config,
        write_example_checkpoint,
    )
    from policy_server_ros.policies import LoadOptions, load_policy  # noqa: PLC0415
    from policy_server_ros.ray_backend import RayEngine  # noqa: PLC0415

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="serve", _node_ip_address="127.0.0.1")
    ckpt = write_example_checkpoint(Path(tempfile.mkdtemp()) / "act", small_config(), 0)
    options = LoadOptions(device="cpu", warmup_image_hw=IMAGE_HW)
    default_threads = torch.get_num_threads()

    class Threads:
        """A local engine run with `threads` torch threads (set around each use)."""

        def __init__(self, engine: InferenceEngine, threads: int) -> None:
            self.engine, self.threads = engine, threads

        def submit(self, obs):
            return self.engine.submit(obs)

        def __enter__(self):
            torch.set_num_threads(self.threads)

        def __exit__(self, *exc):
            torch.set_num_threads(default_threads)

    engines: dict[str, dict[str, object]] = {}
    started = time.perf_counter()
    for model_name, model in (("zero", "builtin:zero"), ("act", str(ckpt))):
        local = InferenceEngine(load_policy(model, options), max_batch=8)
        engines[model_name] = {
            f"local ({default_threads} threads)": Threads(local, default_threads),
            "local (1 thread)": Threads(local, 1)}
        for replicas in (1, 2):
            # Logical CPUs small enough that all four applications fit the 2-CPU cluster at
            # once (so they can take turns); each replica still runs one torch thread.
            engines[model_name][f"ray {replicas} replica{'s' * (replicas > 1)}"] = RayEngine(
                model, options, max_batch=8, ray=RayOptions(
                    address="auto", app_name=f"bench_{model_name}_{replicas}",
                    replicas=replicas, replica_cpus=0.25))
    print(f"engines ready in {time.perf_counter() - started:.0f} s")

    observations = _observations(64)
    raw: dict[str, dict[str, list]] = {m: {e: [] for e in es} for m, es in engines.items()}
    sequential: dict[str, list] = {"local": [], "ray": []}
    for round_ in range(args.rounds):
        for model_name, group in engines.items():
            per_client = args.zero_requests if model_name == "zero" else args.act_requests
            for name, engine in group.items():
                if isinstance(engine, Threads):
                    with engine:
                        raw[model_name][name].append(drive(engine, args.clients, per_client,
                                                           observations))
                else:
                    raw[model_name][name].append(drive(engine, args.clients, per_client,
                                                       observations))
        for kind, engine in (("local", engines["zero"][f"local ({default_threads} threads)"]),
                             ("ray", engines["zero"]["ray 1 replica"])):
            sequential[kind].append(drive(engine, 1, args.sequential, observations))
        print(f"round {round_ + 1}/{args.rounds} done")

    table = {m: {e: summarize(runs) for e, runs in group.items()} for m, group in raw.items()}
    local_p50 = summarize(sequential["local"])["p50_ms"]
    ray_p50 = summarize(sequential["ray"])["p50_ms"]
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "ray": ray.__version__,
                    "torch": torch.__version__, "torch_threads_default": default_threads},
        "settings": vars(args) | {"out": str(args.out), "image_hw": IMAGE_HW,
                                  "act": "small_config (ResNet-18, hidden 32, 10 steps)"},
        "throughput_latency": table,
        "added_latency_ms": {"local_p50": local_p50, "ray_1_replica_p50": ray_p50,
                             "added_p50": ray_p50 - local_p50},
    }
    print(f"\n{args.clients} clients, closed loop, {args.rounds} interleaved rounds")
    print(f"{'model':6} {'engine':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'fail':>5}")
    for model_name, group in table.items():
        for name, row in group.items():
            print(f"{model_name:6} {name:22} {row['throughput_rps']:8.1f} {row['p50_ms']:8.2f} "
                  f"{row['p99_ms']:8.2f} {row['failures']:5d}")
    print(f"\nadded latency of the Ray path (1 client, builtin:zero): p50 {local_p50:.2f} ms "
          f"local -> {ray_p50:.2f} ms ray = +{ray_p50 - local_p50:.2f} ms per request")
    write_result(args.out, result)
    for group in engines.values():
        for engine in group.values():
            (engine.engine if isinstance(engine, Threads) else engine).close()
    from ray import serve  # noqa: PLC0415

    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
