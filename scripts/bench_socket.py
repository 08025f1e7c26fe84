#!/usr/bin/env python3
"""Socket bridge benchmark: round trips of what real clients send, against an honest floor.

    .venv/bin/python scripts/bench_socket.py                 # writes results/bench_socket.json
    .venv/bin/python scripts/bench_socket.py --baseline main # + the server of another revision

Measures, in one run, on 127.0.0.1, for each request case (pickle protocol 4 and 5, 1 and 2
cameras of 3x480x640 uint8, batched state (1, 14) float32 / image (1, K, ...) as ILStudio's clients
send, and unbatched state (14,) float64 / image (K, ...) as the guide's example; each request with
the next timestep, as both send it: np.array([[t]]) and the int t):
  * floor: a raw server (separate process, same framing, one reused buffer) that reads the
    request and answers with as many bytes as this server's reply to it, without decoding
    anything. (The earlier floor echoed the whole ~0.9 MB request back, which doubled its work
    and flattered the ratio.)
  * checks only: the floor's I/O plus only the work no safe server can skip (the safe decode,
    as_batch's checks, the reply's encoding; no engine, timeouts or bookkeeping): what is left
    of the server's distance to the floor when everything else is gone;
  * server: start_policy_server.py -m builtin:zero (separate process), sent the client's
    `pickle.dumps(obs, protocol=P)` bytes;
  * baseline (with --baseline REV): the same server from a checkout of REV, same interpreter;
  * raw client: pre-pickled bytes in, reply bytes out, no decoding: the I/O of the exchange that
    PolicyClient makes (its own portable protocol-4 pickle of the same observation);
  * PolicyClient: the same exchange with its pickling and its safe decoding of the reply.
Every mode of every case takes turns in `--rounds` blocks, so drift (other load) hits all
alike; the ratios compare p50s from the same run. This process runs on one CPU and the servers
on another (`--no-pin` leaves placement to the OS, and then each connection's p50 flips between
two modes). Targets: server / floor <= 1.5 and PolicyClient / raw client <= 1.5. Then
throughput of the server with 1, 4 and 16 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_harness import run_clients, server_argv, start_process, write_result  # noqa: E402

from policy_server_ros.engine import InferenceEngine  # noqa: E402
from policy_server_ros.policies import load_policy  # noqa: E402
from policy_server_ros.policies.base import ActionSpec, PolicyOutput  # noqa: E402
from socket_bridge.client import PolicyClient  # noqa: E402
from socket_bridge.framing import read_frame, write_frame  # noqa: E402
from socket_bridge.portable_pickle import dump_chunks, dumps  # noqa: E402
from socket_bridge.reply_encoder import ReplyEncoder  # noqa: E402
from socket_bridge.request_encoder import RequestEncoder  # noqa: E402
from socket_bridge.safe_unpickle import _ViewReader, safe_loads  # noqa: E402
from socket_bridge.skeleton_cache import c_loads  # noqa: E402
from socket_bridge.wire_types import MetaObs  # noqa: E402

TARGET = 1.5


def serve_floor() -> None:
    """Child-process mode: the floor. A connection's first frame is the 4-byte size of the
    reply to send for each later request; each request is read (not decoded) into one reused
    buffer and answered with a reply of that size, prepared once."""
    def answer(size: int) -> Callable[[memoryview], bytes]:
        reply = struct.pack(">I", size) + bytes(size)
        return lambda payload: reply

    _serve_raw("floor", answer)


def serve_checks_only() -> None:
    """Child-process mode: the floor's I/O plus only the work no safe server can skip: the
    request decoded by the safe decoder (fast path, images aliased), checked and batched by
    as_batch, and builtin:zero's reply encoded, with no engine, timeouts or bookkeeping. The
    server's distance to it is what the server adds; its distance to the floor, the checks."""
    from policy_server_ros.observation import as_batch, batch_size_of  # noqa: PLC0415
    from socket_bridge.framing import HEADER  # noqa: PLC0415
    from socket_bridge.protocol import decode_request  # noqa: PLC0415

    encoder, spec = ReplyEncoder(), ActionSpec(14, 100)

    def checked(payload: memoryview) -> bytes:
        batch, batched = as_batch(decode_request(payload, alias=True))
        actions = np.zeros((batch_size_of(batch), spec.chunk_size, spec.action_dim), np.float32)
        reply = encoder.encode(PolicyOutput(actions, batched, spec))
        return HEADER.pack(len(reply)) + reply

    _serve_raw("checks-only", lambda size: checked)


def _serve_raw(name: str, answerer: Callable[[int], Callable[[memoryview], bytes]]) -> None:
    """A raw server: blocking reads into one reused buffer per connection. A connection's
    first frame is the 4-byte size of the floor's reply, given to `answerer`, which returns
    the function that answers each later request (its whole frame, header included)."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"{name} server on 127.0.0.1:{listener.getsockname()[1]}", flush=True)

    def handle(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = memoryview(bytearray(64 << 20))
        answer = None
        try:
            while True:
                header = conn.recv(4, socket.MSG_WAITALL)
                if len(header) < 4:
                    break
                (length,) = struct.unpack(">I", header)
                got = 0
                while got < length:
                    got += conn.recv_into(buffer[got:length])
                if answer is None:  # the set-up frame
                    answer = answerer(struct.unpack(">I", buffer[:4])[0])
                    continue
                conn.sendall(answer(buffer[:length]))
        finally:
            conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_profiled() -> None:
    """Child-process mode: this project's server (builtin:zero) with each stage of a request
    timed; on end of stdin it prints the p50 of each stage in microseconds, as JSON."""
    from policy_server_ros.policies import load_policy  # noqa: PLC0415
    from socket_bridge import server as srv  # noqa: PLC0415

    stages: dict[str, list[float]] = {"decode": [], "engine (policy to reply bytes)": [],
                                      "send reply": [], "after the frame is in": []}
    clock = time.perf_counter
    read_request, infer = srv.PolicySocketServer._read_request, srv.PolicySocketServer._infer
    decode, write = srv.decode_request, srv.write_frame
    frame_in = [0.0]

    def timed(name: str, call: Callable, *args: object, **kwargs: object) -> object:
        start = clock()
        result = call(*args, **kwargs)
        stages[name].append(clock() - start)
        return result

    def timed_read(self: object, *args: object) -> object:
        payload = read_request(self, *args)
        frame_in[0] = clock()
        return payload

    def timed_write(*args: object) -> None:
        timed("send reply", write, *args)
        stages["after the frame is in"].append(clock() - frame_in[0])

    srv.PolicySocketServer._read_request = timed_read
    srv.PolicySocketServer._infer = lambda self, *a: timed("engine (policy to reply bytes)",
                                                           infer, self, *a)
    srv.decode_request = lambda *a, **k: timed("decode", decode, *a, **k)
    srv.write_frame = timed_write
    engine = InferenceEngine(load_policy("builtin:zero"), max_batch=8)
    engine.wait_ready()
    server = srv.PolicySocketServer(engine, srv.ServerConfig(host="127.0.0.1", port=0))
    server.start()
    print(f"profiled server on 127.0.0.1:{server.address[1]}", flush=True)
    sys.stdin.read()
    server.stop()
    engine.close()
    skip = 50  # the first requests learn skeletons and templates
    print(json.dumps({name: float(np.median(v[skip:]) * 1e6) for name, v in stages.items()}),
          flush=True)


def server_stages(key: tuple[int, int, bool], count: int, cpus: set[int] | None) -> dict:
    """Where the server's time goes for one request case: the profiled server's stage p50s
    (microseconds), with the same pinning as the rest of the run."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve-profiled"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    if cpus is not None:
        os.sched_setaffinity(proc.pid, cpus)
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    payloads = [pickle.dumps(obs, protocol=key[0]) for obs in requests(key)]
    trips = []
    with _connect(port) as sock:
        for index in range(count + 50):
            start = time.perf_counter()
            _raw_exchange(sock, payloads[index % len(payloads)])
            trips.append(time.perf_counter() - start)
    proc.stdin.close()
    result = json.loads(proc.stdout.read().strip().splitlines()[-1])
    proc.wait(10)
    return {"round trip": float(np.median(trips[50:]) * 1e6), **result}


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _raw_exchange(sock: socket.socket, payload: bytes) -> int:
    write_frame(sock, payload)
    return len(read_frame(sock, frame_timeout=30))


# Requests cycle through this many timesteps (t = 0, 50, 100, ...: one request per chunk).
TIMESTEPS = 16


def request(protocol_cameras_batched: tuple[int, int, bool], t: int = 0) -> MetaObs:
    """The observation of control step `t`, as each kind of client sends it; the timestep
    changes with every request, so no two consecutive requests have the same bytes."""
    _, cameras, batched = protocol_cameras_batched
    rng = np.random.default_rng(cameras)
    if batched:  # ILStudio's own clients (deploy/remote/client.py): timestep = np.array([[t]])
        return MetaObs(state=rng.uniform(-1, 1, (1, 14)).astype(np.float32),
                       image=rng.integers(0, 256, (1, cameras, 3, 480, 640), dtype=np.uint8),
                       raw_lang="pick up the cube", timestep=np.array([[t]]))
    return MetaObs(state=rng.uniform(-1, 1, 14),  # the guide's example: timestep=i
                   image=rng.integers(0, 256, (cameras, 3, 480, 640), dtype=np.uint8),
                   raw_lang="pick up the cube", timestep=t)


def requests(key: tuple[int, int, bool]) -> list[MetaObs]:
    """TIMESTEPS consecutive requests of one client, 50 control steps apart."""
    return [request(key, 50 * i) for i in range(TIMESTEPS)]


class _Cycle:
    """Calls `exchange` with the next item of `items` each time (round robin)."""

    def __init__(self, exchange: Callable[[object], object], items: list) -> None:
        self.exchange, self.items, self.index = exchange, items, 0

    def __call__(self) -> object:
        self.index = (self.index + 1) % len(self.items)
        return self.exchange(self.items[self.index])


class Case:
    """One request shape and its connections: a list of (mode, timed exchange) pairs."""

    def __init__(self, key: tuple[int, int, bool], ports: dict[str, int]) -> None:
        protocol, cameras, batched = key
        self.name = f"protocol {protocol}, {cameras} camera{'s' * (cameras > 1)}, " \
                    f"{'batched' if batched else 'unbatched'}"
        observations = requests(key)
        payloads = [pickle.dumps(obs, protocol=protocol) for obs in observations]  # the clients'
        portables = [dumps(obs) for obs in observations]  # PolicyClient's, for the same ones
        self.request_bytes = len(payloads[0])
        server = _connect(ports["server"])
        self.reply_bytes = _raw_exchange(server, payloads[0])
        floor = _connect(ports["floor"])
        write_frame(floor, struct.pack(">I", self.reply_bytes))
        checks = _connect(ports["checks only"])
        write_frame(checks, struct.pack(">I", self.reply_bytes))
        client = PolicyClient("127.0.0.1", ports["server"])
        client.connect()
        raw_client = _connect(ports["server"])
        self.sockets = [server, floor, checks, raw_client]
        self.client = client
        self.modes: dict[str, Callable[[], object]] = {
            "floor": _Cycle(lambda p: _raw_exchange(floor, p), payloads),
            "checks only": _Cycle(lambda p: _raw_exchange(checks, p), payloads),
            "server": _Cycle(lambda p: _raw_exchange(server, p), payloads),
            "raw client": _Cycle(lambda p: _raw_exchange(raw_client, p), portables),
            "PolicyClient": _Cycle(client.send_meta_obs, observations),
        }
        if "baseline" in ports:
            baseline = _connect(ports["baseline"])
            self.sockets.append(baseline)
            self.modes["baseline server"] = _Cycle(lambda p: _raw_exchange(baseline, p),
                                                   payloads)
        self.times: dict[str, list[float]] = {mode: [] for mode in self.modes}

    def close(self) -> None:
        self.client.disconnect()
        for sock in self.sockets:
            sock.close()


def run_rounds(cases: list[Case], count: int, warmup: int, rounds: int) -> None:
    """`count` timed exchanges per mode and case, in `rounds` blocks taking turns; each round
    starts at another case and mode, so no mode always follows the same one."""
    for case in cases:
        for exchange in case.modes.values():
            for _ in range(warmup):
                exchange()
    per_block = max(1, count // rounds)
    for index in range(rounds):
        for case in _rotated(cases, index):
            for mode in _rotated(list(case.modes), index):
                exchange, out = case.modes[mode], case.times[mode]
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    exchange()
                    out.append(time.perf_counter() - t0)


def _rotated(items: list, index: int) -> list:
    start = index % len(items)
    return items[start:] + items[:start]


def decode_steps(keys: list[tuple[int, int, bool]], count: int) -> list[dict]:
    """In-process, per request case, each step against what it replaced, taking turns:
    decoding the request (checked pure-Python decoder, which a changing timestep used to get,
    vs the fast path), decoding the server's reply (checked vs the C unpickler's fast path vs
    the reply template), PolicyClient's pickling (array data copied vs sent from the array vs
    its request template), and running the request in the engine (handed to its worker:
    submit + result, vs on the calling thread: run_here, which the server uses when the engine
    is idle)."""
    policy = load_policy("builtin:zero")
    engine = InferenceEngine(policy, max_batch=8)
    engine.wait_ready()
    reply_batched = ReplyEncoder().encode(PolicyOutput(
        np.zeros((1, 100, 14), np.float32), batched=True, spec=ActionSpec(14, 100)))
    reply_single = ReplyEncoder().encode(PolicyOutput(
        np.zeros((1, 100, 14), np.float32), batched=False, spec=ActionSpec(14, 100)))
    rows = []
    for key in keys:
        obs = request(key)
        encoder = RequestEncoder()
        data = [pickle.dumps(o, protocol=key[0]) for o in requests(key)]
        reply = bytes(reply_batched if key[2] else reply_single)
        steps = {
            "request, checked": _Cycle(lambda d: safe_loads(d, fast_path=False), data),
            "request, fast": _Cycle(safe_loads, data),
            "reply, checked": lambda r=reply: safe_loads(r, fast_path=False),
            "reply, C unpickler": lambda r=reply: c_loads(_ViewReader(r), _c_resolver()),
            "reply, fast": lambda r=reply: safe_loads(r),
            "reply, pickle.loads (unsafe)": lambda r=reply: pickle.loads(r),
            "pickling, copied": lambda o=obs: _copying_dump(o),
            "pickling, direct": lambda o=obs: dump_chunks(o),
            "pickling, template": _Cycle(encoder.encode, requests(key)),
            "engine, worker": lambda o=obs: engine.submit(o).result(10),
            "engine, run here": lambda o=obs: engine.run_here(o),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            step()  # the fast path learns the skeleton
        for index in range(count):
            for name in _rotated(list(steps), index):
                t0 = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - t0)
        name = f"protocol {key[0]}, {key[1]} camera{'s' * (key[1] > 1)}, " \
               f"{'batched' if key[2] else 'unbatched'}"
        rows.append({"case": name, **{k: float(np.median(v) * 1e3) for k, v in times.items()}})
    engine.close()
    return rows


def _c_resolver() -> Callable[[str, str], object]:
    """The fast path's restricted find_class (what the C unpickler runs with)."""
    from socket_bridge.safe_unpickle import _FAST_RESOLVERS  # noqa: PLC0415 - private, bench

    return _FAST_RESOLVERS[True]


def _copying_dump(obj: object) -> list:
    """PolicyClient's pickling before it sent arrays from their own memory: numpy's state,
    with the data copied into a bytes object."""
    class Copying(pickle.Pickler):
        def reducer_override(self, value: object) -> object:
            if type(value) is np.ndarray:
                return np.empty, ((0,), value.dtype), value.__reduce__()[2]
            return NotImplemented

    chunks: list = []
    file = type("Chunks", (), {"write": staticmethod(chunks.append)})()
    Copying(file, protocol=4).dump(obj)
    return chunks


def throughput(port: int, payload: bytes, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop_at = time.perf_counter() + seconds
    barrier = threading.Barrier(clients)

    def run(index: int) -> None:
        with _connect(port) as sock:
            barrier.wait()
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                _raw_exchange(sock, payload)
                latencies[index].append(time.perf_counter() - t0)

    elapsed = run_clients(run, clients)
    flat = np.array([x for per in latencies for x in per]) * 1e3
    return {"clients": clients, "requests": len(flat), "req_per_s": len(flat) / elapsed,
            "p50_ms": float(np.percentile(flat, 50)), "p99_ms": float(np.percentile(flat, 99))}


def stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


def baseline_server(revision: str, workdir: Path) -> list[str]:
    """start_policy_server.py from a checkout of `revision`, run by this interpreter."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force",
                    str(workdir), revision], check=True, capture_output=True)
    argv = server_argv("-m", "builtin:zero")
    argv[1] = str(workdir / "start_policy_server.py")
    return argv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400,
                        help="timed round trips per mode and case")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=0,
                        help="blocks the modes take turns in (default: one exchange per turn)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput level")
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure the server of this git revision (e.g. main)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let the OS place the processes (default: this client on one CPU, "
                             "the servers on another)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_socket.json")
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-checks-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-profiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor()
        return 0
    if args.serve_checks_only:
        serve_checks_only()
        return 0
    if args.serve_profiled:
        serve_profiled()
        return 0
    args.rounds = args.rounds or args.requests

    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = None
    if args.pin and len(cpus) >= 2:
        # Unpinned, each connection's p50 flips between two modes (the two threads on one core
        # or on two; 0.3 vs 0.6 ms for the same floor exchange), and the ratios with it.
        os.sched_setaffinity(0, {cpus[0]})
        server_cpus = {cpus[1]}
    procs = []
    tmp = tempfile.TemporaryDirectory(prefix="bench_socket_")
    workdir = Path(tmp.name) / "baseline"
    cases: list[Case] = []
    try:
        floor, floor_port = start_process([sys.executable, __file__, "--serve-floor"],
                                          r"floor server on .*:(\d+)", server_cpus)
        procs.append(floor)
        checks, checks_port = start_process([sys.executable, __file__, "--serve-checks-only"],
                                            r"checks-only server on .*:(\d+)", server_cpus)
        procs.append(checks)
        server, port = start_process(server_argv("-m", "builtin:zero"), cpus=server_cpus)
        procs.append(server)
        ports = {"floor": floor_port, "checks only": checks_port, "server": port}
        if args.baseline:
            base, ports["baseline"] = start_process(baseline_server(args.baseline, workdir),
                                                    cpus=server_cpus)
            procs.append(base)
        keys = [(p, k, b) for b in (True, False) for k in (1, 2) for p in (4, 5)]
        cases = [Case(key, ports) for key in keys]
        run_rounds(cases, args.requests, args.warmup, args.rounds)
        steps = decode_steps(keys, max(50, args.requests // 2))
        stages = [{"case": case.name, **server_stages(key, args.requests, server_cpus)}
                  for case, key in zip(cases, keys, strict=True) if key[1] == 1]
        main_payload = pickle.dumps(request(keys[0], 50), protocol=4)
        scaling = [throughput(port, main_payload, n, args.seconds) for n in (1, 4, 16)]
    finally:
        for case in cases:
            case.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(workdir)], check=False, capture_output=True)
        tmp.cleanup()

    rows = []
    for case in cases:
        row = {"case": case.name, "request_bytes": case.request_bytes,
               "reply_bytes": case.reply_bytes,
               **{mode: stats(times) for mode, times in case.times.items()}}
        p50 = {mode: row[mode]["p50_ms"] for mode in case.modes}
        row["server_over_floor"] = p50["server"] / p50["floor"]
        row["checks_only_over_floor"] = p50["checks only"] / p50["floor"]
        row["client_over_raw_client"] = p50["PolicyClient"] / p50["raw client"]
        if args.baseline:
            row["baseline_over_floor"] = p50["baseline server"] / p50["floor"]
        rows.append(row)
    server_ok = all(r["server_over_floor"] <= TARGET for r in rows)
    client_ok = all(r["client_over_raw_client"] <= TARGET for r in rows)
    result = {
        "policy": "builtin:zero (100 x 14 actions)", "baseline": args.baseline,
        "requests_per_mode": args.requests, "rounds": args.rounds, "cases": rows,
        "target_ratio": TARGET, "server_meets_target": server_ok,
        "client_meets_target": client_ok, "steps_ms": steps, "server_stages_us": stages,
        "throughput": scaling,
        "pinned": server_cpus is not None, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    modes = list(cases[0].modes)
    print(f"p50 ms per mode ({args.requests} round trips each, {args.rounds} interleaved rounds)")
    widths = {m: max(14, len(m) + 2) for m in modes}
    header = f"{'case':<36}{'req kB':>7}{'rep kB':>7}" + "".join(f"{m:>{widths[m]}}"
                                                                  for m in modes)
    header += f"{'srv/floor':>10}{'chk/floor':>10}{'cli/raw':>9}"
    header += f"{'base/floor':>11}" if args.baseline else ""
    print(header)
    for row in rows:
        line = f"{row['case']:<36}{row['request_bytes'] / 1e3:>7.0f}" \
               f"{row['reply_bytes'] / 1e3:>7.1f}"
        line += "".join(f"{row[m]['p50_ms']:>{widths[m]}.3f}" for m in modes)
        line += f"{row['server_over_floor']:>10.2f}{row['checks_only_over_floor']:>10.2f}" \
                f"{row['client_over_raw_client']:>9.2f}"
        if args.baseline:
            line += f"{row['baseline_over_floor']:>11.2f}"
        print(line)
    print(f"server p50 / floor p50 <= {TARGET}: {'met' if server_ok else 'NOT met'} in every "
          f"case; PolicyClient / raw client <= {TARGET}: {'met' if client_ok else 'NOT met'}")
    names = [k for k in steps[0] if k != "case"]
    print("in-process p50 ms of each step, against what it replaced (taking turns)")
    print(f"{'case':<36}" + "".join(f"{n:>{max(12, len(n) + 2)}}" for n in names))
    for row in steps:
        print(f"{row['case']:<36}" + "".join(f"{row[n]:>{max(12, len(n) + 2)}.3f}"
                                             for n in names))
    print("where the server's time goes (p50 us; its stages timed inside the server process)")
    names = [k for k in stages[0] if k != "case"]
    print(f"{'case':<36}" + "".join(f"{n:>{len(n) + 2}}" for n in names))
    for row in stages:
        print(f"{row['case']:<36}" + "".join(f"{row[n]:>{len(n) + 2}.1f}" for n in names))
    print(f"{'clients':<10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}   ({cases[0].name})")
    for row in scaling:
        print(f"{row['clients']:<10}{row['req_per_s']:>10.1f}{row['p50_ms']:>9.3f}"
              f"{row['p99_ms']:>9.3f}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
