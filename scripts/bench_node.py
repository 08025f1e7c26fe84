#!/usr/bin/env python3
"""Node benchmark: latency from image stamp to published chunk, drops, and the node's CPU use.

    .venv/bin/python scripts/bench_node.py              # writes results/bench_node.json

A synthetic robot in this process publishes two 480x640 rgb8 cameras and a 14-joint state at
30 Hz (same stamp per frame) to `policy_server` running in a child process, and receives its
ActionChunks. For each policy (builtin:zero, zero cost; the example ACT on the CPU), it reports
the latency from the observation's stamp to the chunk's arrival, p50 and p99, the same minus the
model's own time (the node's overhead; the model time is the node's /diagnostics figure), the
observations dropped because inference was busy, and the node's CPU use.
Fast DDS carries the images over shared memory with config/fastdds_large_shm.xml (16 MiB segment).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np
from bench_harness import ROOT, cpu_seconds, start_node, write_result
from bench_ros import JOINTS, BenchRobot  # first: sets the DDS environment before rclpy loads
from diagnostic_msgs.msg import DiagnosticArray

sys.path.insert(0, str(ROOT))
from policy_server_ros.msg import ActionChunk

from policy_server_ros.example_checkpoint import write_example_checkpoint
from policy_server_ros.policies.act.config import ACTConfig

CAMERAS = ["/cam_high/image_raw", "/cam_wrist/image_raw"]
TWO_CAMERA_ACT = ROOT / "ckpt" / "act_example_two_cameras"


def run(policy: str, seconds: float, rate: float) -> dict:
    node_proc, node_log = start_node(
        f"model_name_or_path:={policy}", "device:=cpu", f"camera_topics:=[{','.join(CAMERAS)}]",
        f"joint_names:=[{','.join(JOINTS)}]", "socket_bridge_enabled:=false")

    robot = BenchRobot(CAMERAS)
    arrivals: list[tuple[int, int]] = []  # (observation stamp, arrival) in ns
    diagnostics: list[DiagnosticArray] = []
    robot.listen("/policy_server/action_chunk", ActionChunk, lambda m: arrivals.append(
        (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.time_ns())))
    robot.listen("/diagnostics", DiagnosticArray, diagnostics.append, 10)
    robot.wait_for_node()
    cpu_start, wall_start = cpu_seconds(node_proc.pid), time.monotonic()
    frames = robot.run(seconds, rate)
    time.sleep(1.5)
    cpu = (cpu_seconds(node_proc.pid) - cpu_start) / (time.monotonic() - wall_start)
    time.sleep(1.0)  # one more diagnostics message after the last chunk
    robot.close()
    node_proc.send_signal(signal.SIGINT)
    node_proc.wait(30)

    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
    if not arrivals:
        raise RuntimeError(f"no chunk arrived from {policy}; node log:\n" + "".join(node_log))
    latency = np.array([(arrival - stamp) / 1e6 for stamp, arrival in arrivals])
    model_p50 = float(values.get("model time p50 ms", "nan"))
    return {
        "policy": policy, "frames_published": frames, "chunks_received": len(arrivals),
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p99_ms": float(np.percentile(latency, 99)),
        "model_time_p50_ms": model_p50,
        "overhead_p50_ms": float(np.percentile(latency, 50)) - model_p50,
        "overhead_p99_ms": float(np.percentile(latency, 99)) - model_p50,
        "dropped_observations": int(values.get("observations dropped (inference busy)", -1)),
        "stale_skipped": int(values.get("stale observations skipped", -1)),
        "node_cpu_percent": 100 * cpu,
        "inputs_received": {k[: -len(" received")]: int(v) for k, v in values.items()
                            if k.endswith(" received")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--policies", nargs="+", default=["builtin:zero", str(TWO_CAMERA_ACT)],
                        help="builtin:zero and a full-size two-camera example ACT (created)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_node.json")
    args = parser.parse_args()
    if str(TWO_CAMERA_ACT) in args.policies and \
            not (TWO_CAMERA_ACT / "model.safetensors").exists():
        write_example_checkpoint(TWO_CAMERA_ACT, ACTConfig(camera_names=("high", "wrist")))
    rows = [run(policy, args.seconds, args.rate) for policy in args.policies]
    print(f"two 480x640 rgb8 cameras + joint state at {args.rate:g} Hz for {args.seconds:g} s")
    print(f"{'policy':<22}{'chunks':>8}{'p50 ms':>8}{'p99 ms':>8}{'model':>8}{'ovh p50':>9}"
          f"{'ovh p99':>9}{'dropped':>9}{'CPU %':>7}")
    for r in rows:
        name = "example ACT, 2 cams" if "example" in r["policy"] else r["policy"]
        print(f"{name:<22}{r['chunks_received']:>4}/{r['frames_published']:<3}"
              f"{r['latency_p50_ms']:>8.1f}{r['latency_p99_ms']:>8.1f}"
              f"{r['model_time_p50_ms']:>8.1f}{r['overhead_p50_ms']:>9.1f}"
              f"{r['overhead_p99_ms']:>9.1f}{r['dropped_observations']:>9}"
              f"{r['node_cpu_percent']:>7.0f}")
    write_result(args.out, {"rows": rows, "rate_hz": args.rate, "seconds": args.seconds,
                            "fastdds_profile": os.environ["FASTDDS_DEFAULT_PROFILES_FILE"],
                            "python": platform.python_version()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
