#!/usr/bin/env python3
"""Command-stream benchmark: how evenly the node's commands go out while inference runs.

    .venv/bin/python scripts/bench_commands.py        # writes results/bench_commands.json

The node (`python -m policy_server_ros`, a child process) serves the example ACT on the CPU with
`execution_mode:=ensemble`, so inference runs on every observation (newest wins while busy) at
the same time as the command timer. A synthetic robot in this process publishes one 480x640
rgb8 camera and the joint state at --rate Hz and receives the commands (Float64MultiArray).
For each control rate (50 and 200 Hz by default) it reports the interval between consecutive
commands as the robot receives them (p50, p99, max), the gaps (intervals over 1.5 control
periods), the commands received against the control ticks in the window, the node's own
figures from /diagnostics (interval p50/p99 on its clock, gaps), the executor thread's CPU use
(the node spins its executor on its main thread; the commands have a thread of their own) and
the whole node's, and the chunks/s inference delivered. Cases run in interleaved rounds
(--rounds) so the machine's drift hits all alike.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np
from bench_harness import ROOT, cpu_seconds, start_node, write_result
from bench_ros import BenchRobot  # first: sets the DDS environment before rclpy loads
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Float64MultiArray

sys.path.insert(0, str(ROOT))
from policy_server_ros.msg import ActionChunk

CAMERA = "/camera/color/image_raw"  # the node's default camera topic, in the root namespace


def run(control_rate: float, seconds: float, rate: float, mode: str, model: str | None) -> dict:
    model_param = [f"model_name_or_path:={model}"] if model else []
    proc, log = start_node(*model_param, "device:=cpu", "socket_bridge_enabled:=false",
                           f"execution_mode:={mode}", f"control_rate:={control_rate}",
                           "command_type:=float64_array", "hold_timeout:=0.5")
    robot = BenchRobot([CAMERA])
    arrivals: list[int] = []
    chunks: list[int] = []
    diagnostics: list[DiagnosticArray] = []
    robot.listen("/policy_server/command", Float64MultiArray,
                 lambda _m: arrivals.append(time.monotonic_ns()), 10)
    robot.listen("/policy_server/action_chunk", ActionChunk,
                 lambda _m: chunks.append(time.monotonic_ns()))
    robot.listen("/diagnostics", DiagnosticArray, diagnostics.append, 10)
    try:
        robot.wait_for_node()
        while not arrivals:  # the first chunk (the model's first run is slow)
            robot.run(0.2, rate)
        start_ns = time.monotonic_ns()
        cpu0, exec0 = cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid)
        robot.run(seconds, rate)
        wall = (time.monotonic_ns() - start_ns) / 1e9
        cpu, executor = cpu_seconds(proc.pid) - cpu0, cpu_seconds(proc.pid, proc.pid) - exec0
        end_ns = time.monotonic_ns()
        time.sleep(1.2)  # one more /diagnostics
    finally:
        robot.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    window = np.array([t for t in arrivals if start_ns <= t <= end_ns], np.int64)
    intervals = np.diff(window) / 1e6
    period_ms = 1000.0 / control_rate
    node = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
    if not intervals.size:
        raise RuntimeError("no commands arrived; node log:\n" + "".join(log))
    return {
        "control_rate_hz": control_rate, "mode": mode, "seconds": wall,
        "commands_received": int(window.size),
        "control_ticks": int(wall * control_rate),
        "interval_p50_ms": float(np.percentile(intervals, 50)),
        "interval_p99_ms": float(np.percentile(intervals, 99)),
        "interval_max_ms": float(intervals.max()),
        "gaps": int((intervals > 1.5 * period_ms).sum()),
        "node_interval_p50_ms": float(node.get("command interval p50 ms", "nan")),
        "node_interval_p99_ms": float(node.get("command interval p99 ms", "nan")),
        "node_gaps": int(node.get("command gaps (> 1.5 periods)", -1)),
        "node_commands_held": int(node.get("commands held", -1)),
        "chunks_per_s": sum(start_ns <= t <= end_ns for t in chunks) / wall,
        "model_time_p50_ms": float(node.get("model time p50 ms", "nan")),
        "executor_cpu_percent": 100 * executor / wall,
        "node_cpu_percent": 100 * cpu / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--control_rates", type=float, nargs="+", default=[50.0, 200.0])
    parser.add_argument("--mode", default="ensemble", choices=("chunk", "ensemble", "aggregate"))
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=25.0, help="camera + joints, Hz")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", help="model_name_or_path (default: the node's, the example "
                                        "ACT); builtin:echo shows the stream without inference "
                                        "load")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_commands.json")
    args = parser.parse_args()
    rows = [run(control_rate, args.seconds, args.rate, args.mode, args.model)
            for _ in range(args.rounds) for control_rate in args.control_rates]
    print(f"{args.model or 'example ACT'} on the CPU, execution_mode {args.mode}, one 480x640 "
          f"camera + joints at {args.rate:g} Hz, {args.seconds:g} s per case, {args.rounds} "
          f"interleaved rounds")
    print(f"{'rate Hz':>8}{'cmds/ticks':>12}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'gaps':>6}"
          f"{'node p50':>9}{'node p99':>9}{'chunks/s':>9}{'exec CPU%':>10}{'node CPU%':>10}")
    for r in rows:
        print(f"{r['control_rate_hz']:>8g}{r['commands_received']:>6}/{r['control_ticks']:<5}"
              f"{r['interval_p50_ms']:>8.2f}{r['interval_p99_ms']:>8.2f}"
              f"{r['interval_max_ms']:>8.1f}{r['gaps']:>6}{r['node_interval_p50_ms']:>9.2f}"
              f"{r['node_interval_p99_ms']:>9.2f}{r['chunks_per_s']:>9.1f}"
              f"{r['executor_cpu_percent']:>10.0f}{r['node_cpu_percent']:>10.0f}")
    write_result(args.out, {"rows": rows, "mode": args.mode,
                            "model": args.model or "example ACT", "camera_rate_hz": args.rate,
                            "machine": platform.platform(),
                            "python": platform.python_version()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
