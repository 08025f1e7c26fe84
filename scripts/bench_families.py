#!/usr/bin/env python3
"""Policy-family benchmark: Diffusion Policy, MLP and replay through the inference engine.

    .venv/bin/python scripts/bench_families.py            # writes results/bench_families.json
    .venv/bin/python scripts/bench_families.py --device cuda --cases dp_1cam_10 dp_2cam_100

Each case runs in a fresh process (its own peak RSS): the example checkpoint of its family
(ALOHA sizes: 14-D state and action; Diffusion Policy with horizon 16 and 480x640 cameras) is
loaded, warmed up, then asked one observation at a time; per-observation latency p50/p99
(submit -> denormalized actions) and the process's peak RSS are printed as a table and written
as JSON. The weights are untrained; speed does not depend on that.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_harness import write_result  # noqa: E402

from policy_server_ros.engine import InferenceEngine  # noqa: E402
from policy_server_ros.example_checkpoint import main as write_example  # noqa: E402
from policy_server_ros.policies import LoadOptions, load_policy  # noqa: E402
from socket_bridge.wire_types import MetaObs  # noqa: E402

# case: (family, cameras, denoising steps or None, default timed requests)
CASES = {
    "dp_1cam_10": ("diffusion_policy", 1, 10, 20),
    "dp_1cam_100": ("diffusion_policy", 1, 100, 8),
    "dp_2cam_10": ("diffusion_policy", 2, 10, 20),
    "dp_2cam_100": ("diffusion_policy", 2, 100, 8),
    "mlp": ("mlp", 0, None, 300),
    "replay": ("replay", 0, None, 300),
}


def checkpoint_for(case: str, folder: Path) -> Path:
    family, cameras, _, _ = CASES[case]
    path = folder / f"{family}_{cameras}cam"
    if not path.is_dir():
        write_example([str(path), "--policy", family, "--cameras", str(cameras)])
    return path


def observation(rng: np.random.Generator, cameras: int, step: int) -> MetaObs:
    image = rng.integers(0, 256, (cameras, 3, 480, 640), dtype=np.uint8) if cameras else None
    return MetaObs(state=rng.normal(size=14), image=image, timestep=step)


def run_case(case: str, ckpt: Path, device: str, requests: int) -> dict:
    family, cameras, steps, _ = CASES[case]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    policy = load_policy(ckpt, LoadOptions(device=device, num_inference_steps=steps or 10))
    engine = InferenceEngine(policy, max_batch=1)
    engine.wait_ready()
    ready_s = time.perf_counter() - t0
    engine.submit(observation(rng, cameras, 0)).result()
    latencies, forward = [], []
    for step in range(requests):
        obs = observation(rng, cameras, step)
        start = time.perf_counter()
        out = engine.submit(obs).result()
        latencies.append((time.perf_counter() - start) * 1e3)
        forward.append(out.timings_ms["forward"])
    engine.close()
    return {"case": case, "family": family, "cameras": cameras, "denoising_steps": steps,
            "device": device, "requests": requests, "chunk": policy.spec.chunk_size,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "forward_p50_ms": float(np.percentile(forward, 50)),
            "load_and_warmup_s": ready_s,
            "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage: Linux carries ru_maxrss over execve, so a
    child started by a parent that built a large model would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--requests", type=int, default=0,
                        help="timed requests per case (default: per case, 8 to 300)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder for the example checkpoints (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_families.json")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        case, ckpt = args.one
        print(json.dumps(run_case(case, Path(ckpt), args.device,
                                  args.requests or CASES[case][3])))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoints or Path(tmp)
        rows = []
        for case in args.cases:  # each in a fresh process: its own peak RSS
            ckpt = checkpoint_for(case, folder)
            out = subprocess.run([sys.executable, __file__, "--one", case, str(ckpt),
                                  "--device", args.device, "--requests", str(args.requests)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"measured {case}", file=sys.stderr)
    print(f"policy families, example checkpoints (ALOHA sizes, 480x640 cameras), one "
          f"observation at a time, device {args.device}")
    print(f"{'case':<14}{'steps':>6}{'chunk':>6}{'p50 ms':>10}{'p99 ms':>10}{'RSS MiB':>9}"
          f"{'ready s':>9}")
    for r in rows:
        print(f"{r['case']:<14}{r['denoising_steps'] or '-':>6}{r['chunk']:>6}"
              f"{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['peak_rss_mib']:>9.0f}"
              f"{r['load_and_warmup_s']:>9.1f}")
    write_result(args.out, {"rows": rows, "python": platform.python_version(),
                            "machine": platform.machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
