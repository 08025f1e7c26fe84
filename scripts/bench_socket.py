#!/usr/bin/env python3
"""Socket bridge benchmark: round-trip latency and throughput against the loopback floor.

    .venv/bin/python scripts/bench_socket.py                 # writes results/bench_socket.json

Measures, in one run, on 127.0.0.1:
  * floor: a raw echo server (separate process, same framing) that sends the request bytes
    back; the best any server could do for this payload;
  * server: start_policy_server.py -m builtin:zero (separate process): safe decoding, engine
    hand-off, reply encoding, with the zero-cost policy;
  * client: the same through PolicyClient (client-side pickling and safe decoding included);
  * throughput of the server with 1, 4 and 16 concurrent clients.
The request is the guide's: one 3x480x640 uint8 camera and a 14-D float64 state. Target:
server p50 within 1.5x of the floor p50.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_harness import server_argv, start_process, write_result  # noqa: E402

from socket_bridge.client import PolicyClient  # noqa: E402
from socket_bridge.framing import read_frame, write_frame  # noqa: E402
from socket_bridge.portable_pickle import dumps  # noqa: E402
from socket_bridge.wire_types import MetaObs  # noqa: E402


def serve_echo() -> None:
    """Child-process mode: echo every frame back; print the port first."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"echo server on 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    def handle(conn: socket.socket) -> None:
        # The floor: no decoding and no per-request allocation, one reused buffer.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = memoryview(bytearray(64 << 20))
        try:
            while True:
                header = conn.recv(4, socket.MSG_WAITALL)
                if len(header) < 4:
                    break
                (length,) = struct.unpack(">I", header)
                got = 0
                while got < length:
                    got += conn.recv_into(buffer[got:length])
                conn.sendall(header)
                conn.sendall(buffer[:length])
        finally:
            conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def raw_latencies(ports: list[int], payload: bytes, count: int, warmup: int,
                  rounds: int = 10) -> list[np.ndarray]:
    """Round trips of pre-pickled bytes to each port, timed from first byte sent to last byte
    received. The ports take turns in `rounds` blocks, so drift (other load, CPU placement)
    affects floor and server alike."""
    socks = [socket.create_connection(("127.0.0.1", port)) for port in ports]
    times: list[list[float]] = [[] for _ in ports]
    try:
        for sock in socks:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(warmup):
                write_frame(sock, payload)
                read_frame(sock, frame_timeout=30)
        for _ in range(rounds):
            for sock, out in zip(socks, times, strict=True):
                for _ in range(max(1, count // rounds)):
                    t0 = time.perf_counter()
                    write_frame(sock, payload)
                    read_frame(sock, frame_timeout=30)
                    out.append(time.perf_counter() - t0)
    finally:
        for sock in socks:
            sock.close()
    return [np.array(t) * 1e3 for t in times]


def client_latencies(port: int, obs: MetaObs, count: int, warmup: int) -> np.ndarray:
    with PolicyClient("127.0.0.1", port) as client:
        times = []
        for i in range(warmup + count):
            t0 = time.perf_counter()
            reply = client.send_meta_obs(obs)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
            assert reply, "server replied []"
    return np.array(times) * 1e3


def throughput(port: int, payload: bytes, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop_at = time.perf_counter() + seconds
    barrier = threading.Barrier(clients)

    def run(index: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            barrier.wait()
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                write_frame(sock, payload)
                read_frame(sock, frame_timeout=30)
                latencies[index].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = np.array([x for per in latencies for x in per]) * 1e3
    return {"clients": clients, "requests": len(flat), "req_per_s": len(flat) / elapsed,
            "p50_ms": float(np.percentile(flat, 50)), "p99_ms": float(np.percentile(flat, 99))}


def stats(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed round trips per mode")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput level")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_socket.json")
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo()
        return 0

    rng = np.random.default_rng(0)
    obs = MetaObs(state=rng.uniform(-1, 1, 14),
                  image=rng.integers(0, 256, (1, 3, 480, 640), dtype=np.uint8),
                  raw_lang="pick up the cube")
    payload = dumps(obs)
    echo, echo_port = start_process([sys.executable, __file__, "--serve-echo"],
                                    r"echo server on .*:(\d+)")
    server, port = start_process(server_argv("-m", "builtin:zero"))
    try:
        floor, served = map(stats, raw_latencies([echo_port, port], payload, args.requests,
                                                 args.warmup))
        client = stats(client_latencies(port, obs, args.requests, args.warmup))
        scaling = [throughput(port, payload, n, args.seconds) for n in (1, 4, 16)]
    finally:
        for proc in (server, echo):
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)

    ratio = served["p50_ms"] / floor["p50_ms"]
    result = {
        "payload_bytes": len(payload), "policy": "builtin:zero (100 x 14 actions)",
        "floor_echo": floor, "server_raw": served, "server_via_PolicyClient": client,
        "p50_ratio_to_floor": ratio, "target_ratio": 1.5, "meets_target": ratio <= 1.5,
        "throughput": scaling, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(f"request: {len(payload):,} bytes (3x480x640 uint8 camera + 14-D state)")
    print(f"{'mode':<34}{'p50 ms':>9}{'p99 ms':>9}")
    for name, row in [("floor: raw loopback echo", floor), ("server, raw bytes", served),
                      ("server, PolicyClient (pickling)", client)]:
        print(f"{name:<34}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}")
    print(f"server p50 / floor p50 = {ratio:.2f} (target <= 1.5: "
          f"{'met' if ratio <= 1.5 else 'NOT met'})")
    print(f"{'clients':<10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for row in scaling:
        print(f"{row['clients']:<10}{row['req_per_s']:>10.1f}{row['p50_ms']:>9.3f}"
              f"{row['p99_ms']:>9.3f}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
