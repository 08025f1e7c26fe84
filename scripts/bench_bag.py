"""Rosbag tools benchmark: how fast `eval` walks a bag and how closely `replay` keeps time.

    .venv/bin/python scripts/bench_bag.py [--seconds 10] [--model builtin:echo] [--rate 1 4]

Writes a sample bag (two 120x160 cameras at 25 Hz, joints, pose and commands at 50 Hz) into a
temporary folder, then:
  - eval: wall time, messages/s and observations/s with `--model` (default builtin:echo, the
    cost of the bag walk itself; pass the example checkpoint for a real model);
  - replay: at each `--rate`, into a raw subscriber on a private ROS domain: the publisher's
    timing error (how late each message went out, p50/p99/max) and the messages received.
Prints a table and writes results/bench_bag.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_harness import ROOT, write_result

sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "97")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(ROOT / "config" / "fastdds_large_shm.xml"))

from rclpy.qos import QoSProfile, ReliabilityPolicy

from policy_server_ros.bag_tools.evaluate import evaluate
from policy_server_ros.bag_tools.replay import ReplayOptions, replay
from policy_server_ros.bag_tools.ros_io import Spinner, message_class, ros_node
from policy_server_ros.bag_tools.sample import COMMAND_TOPIC, SampleSpec, make_sample
from policy_server_ros.bag_tools.storage import open_bag
from policy_server_ros.inputs import node_params


def bench_eval(bag: Path, model: str) -> dict:
    with open_bag(bag) as reader:
        messages = reader.message_count
    begin = time.perf_counter()
    report = evaluate(bag, node_params(model_name_or_path=model, device="cpu"),
                      action_topic=COMMAND_TOPIC, progress=False).report
    wall = time.perf_counter() - begin
    return {"model": model, "wall_s": wall, "messages": messages,
            "messages_per_s": messages / wall,
            "observations": report["observations_evaluated"],
            "observations_per_s": report["observations_evaluated"] / wall,
            "model_ms": report["model_ms"], "mae_full": report["horizons"]["100"]["mae_mean"]}


def bench_replay(bag: Path, rate: float) -> dict:
    with open_bag(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
    received = {"n": 0}
    lock = threading.Lock()

    def count(_: bytes) -> None:
        with lock:
            received["n"] += 1

    with ros_node("bench_listener") as (node, executor):
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msgtype in topics.items():
            node.create_subscription(message_class(msgtype), topic, count, qos, raw=True)
        spinner = Spinner(executor)
        try:
            summary = replay(bag, ReplayOptions(rate=rate, restamp=True), threading.Event(),
                             report=lambda _: None)
            time.sleep(0.5)
        finally:
            spinner.stop()
    published = sum(summary.published.values())
    return {"rate": rate, "wall_s": summary.wall_s, "published": published,
            "received": received["n"], "timing_error_ms": summary.timing_error_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model", default="builtin:echo")
    parser.add_argument("--rate", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_bag.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "sample"
        begin = time.perf_counter()
        make_sample(bag, SampleSpec(seconds=args.seconds))
        make_s = time.perf_counter() - begin
        ev = bench_eval(bag, args.model)
        replays = [bench_replay(bag, rate) for rate in args.rate]
    print(f"make-sample ({args.seconds:g} s bag): {make_s:.2f} s")
    print(f"eval {ev['model']}: {ev['wall_s']:.2f} s, {ev['messages_per_s']:.0f} bag messages/s, "
          f"{ev['observations_per_s']:.1f} observations/s, MAE(full) {ev['mae_full']:.3g}")
    print("replay rate | wall s | published | received | late p50 ms | p99 ms | max ms")
    for r in replays:
        t = r["timing_error_ms"]
        print(f"{r['rate']:>11g} | {r['wall_s']:6.2f} | {r['published']:>9} | "
              f"{r['received']:>8} | {t['p50']:>11.2f} | {t['p99']:6.2f} | {t['max']:6.2f}")
    write_result(args.out, {"make_sample_s": make_s, "bag_seconds": args.seconds,
                            "eval": ev, "replay": replays})
    return 0


if __name__ == "__main__":
    sys.exit(main())
