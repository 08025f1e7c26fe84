#!/usr/bin/env python3
"""Stress the socket server under load, faults and hostile input; print one table.

    .venv/bin/python scripts/stress_socket.py                 # 8 clients x 2000 requests
    .venv/bin/python scripts/stress_socket.py --requests 200  # a quicker run

Loopback only, bounded in count and time, stops by itself. The server (start_policy_server.py,
a small real ACT on the CPU) runs in its own process. While 8 clients send their requests,
each reply checked against the request it answers, the script also sends every pickle of the
hostile corpus, 500 fuzzed frames, a client trickling one byte a second, idle connections and
clients beyond the connection cap. Descriptors, threads and RSS are read from /proc.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_harness import ROOT, server_argv, start_process, write_result

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
from act_fixtures import observation, small_checkpoint
from hostile_pickles import corpus

from policy_server_ros.observation import as_batch
from policy_server_ros.policies import LoadOptions, load_policy
from socket_bridge.client import PolicyClient


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(re.search(r"Threads:\s+(\d+)", status).group(1)),
            "rss_mib": int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024}


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="per client")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "stress_socket.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stress_"))
    ckpt = small_checkpoint(work / "act")
    observations = [observation(seed=i) for i in range(16)]
    reference = load_policy(ckpt, LoadOptions(device="cpu"))
    expected = [reference.predict(as_batch(o)[0])[0] for o in observations]
    canary = work / "canary"
    hostile = list(corpus(canary).values())

    server, port = start_process(server_argv(
        "-m", str(ckpt), "--device", "cpu", "--warmup_image_size", "64x80", "--frame_timeout",
        "2", "--idle_timeout", "3", "--max_connections", "32"))
    time.sleep(1.0)
    before = proc_stats(server.pid)
    results = {"served": 0, "empty": 0, "mismatched": 0, "lost": 0}
    latencies: list[float] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(index)
        with PolicyClient("127.0.0.1", port, read_timeout=60) as c:
            for _ in range(args.requests):
                k = rng.randrange(len(observations))
                start = time.perf_counter()
                try:
                    reply = c.send_meta_obs(observations[k])
                except (ConnectionError, OSError):
                    with lock:
                        results["lost"] += 1
                    continue
                elapsed = (time.perf_counter() - start) * 1e3
                ok = bool(reply) and np.allclose(np.stack([a.action for a in reply]),
                                                 expected[k], rtol=1e-4, atol=1e-5)
                with lock:
                    latencies.append(elapsed)
                    key = "served" if ok else ("empty" if not reply else "mismatched")
                    results[key] += 1

    def attack() -> dict[str, int]:
        counts = {"hostile_refused": 0, "fuzz_frames": 0, "cap_refused": 0, "slow_dropped": 0,
                  "idle_dropped": 0}
        rng = np.random.default_rng(0)
        for data in hostile:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(struct.pack(">I", len(data)) + data)
                counts["hostile_refused"] += closed_by_peer(s, 5)
        for _ in range(500):
            body = rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(struct.pack(">I", len(body)) + body if rng.random() < 0.5 else body)
            counts["fuzz_frames"] += 1
        slow = socket.create_connection(("127.0.0.1", port))
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        for byte in struct.pack(">I", 100) + b"x" * 4:  # one byte a second
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(1.0)
        counts["slow_dropped"] = int(closed_by_peer(slow, 5))
        counts["idle_dropped"] = sum(closed_by_peer(s, 5) for s in idle)
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        counts["cap_refused"] = sum(closed_by_peer(s, 0.5) for s in extra)
        for s in [slow, *idle, *extra]:
            s.close()
        return counts

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients + 1) as pool:
        attacker = pool.submit(attack)
        list(pool.map(client, range(args.clients)))
        wall = time.perf_counter() - start  # the clients' time; the attacks may go on
        attacks = attacker.result()
    time.sleep(4.0)  # idle connections time out
    after = proc_stats(server.pid)
    server.send_signal(signal.SIGINT)
    server.wait(30)

    total = args.clients * args.requests
    row = {
        "requests": total, **results, "errors": results["empty"] + results["lost"],
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "throughput_per_s": results["served"] / wall, "wall_s": wall,
        "rss_start_mib": before["rss_mib"], "rss_end_mib": after["rss_mib"],
        "rss_drift_mib": after["rss_mib"] - before["rss_mib"],
        "fds_before": before["fds"], "fds_after": after["fds"],
        "threads_before": before["threads"], "threads_after": after["threads"],
        "hostile_pickles": len(hostile), **attacks, "canary_absent": not canary.exists(),
    }
    print(f"{args.clients} clients x {args.requests} requests, small ACT on the CPU, "
          f"with hostile, fuzzed, slow, idle and over-cap connections alongside")
    print("| served | lost | mismatched | errors ([]) | p50 ms | p99 ms | req/s | RSS start -> end "
          "(drift) MiB | fds before -> after | threads before -> after |")
    print(f"| {row['served']}/{total} | {row['lost']} | {row['mismatched']} | {row['empty']} | "
          f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['throughput_per_s']:.0f} | "
          f"{row['rss_start_mib']:.0f} -> {row['rss_end_mib']:.0f} ({row['rss_drift_mib']:+.0f}) "
          f"| {row['fds_before']} -> {row['fds_after']} | {row['threads_before']} -> "
          f"{row['threads_after']} |")
    print(f"hostile pickles refused {attacks['hostile_refused']}/{len(hostile)} (canary absent: "
          f"{row['canary_absent']}), fuzz frames {attacks['fuzz_frames']}, slow client dropped "
          f"{attacks['slow_dropped']}, idle dropped {attacks['idle_dropped']}/5, refused at the "
          f"connection cap {attacks['cap_refused']} of 40 extra connections")
    write_result(args.out, {"row": row, "python": platform.python_version()})
    ok = (row["served"] == total and row["canary_absent"]
          and attacks["hostile_refused"] == len(hostile))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
