"""Shared pieces of the benchmark scripts: starting server processes and writing results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_STARTED = r"Policy Server started on .*:(\d+)"


def start_process(argv: list[str], pattern: str = SERVER_STARTED,
                  cpus: set[int] | None = None) -> tuple[subprocess.Popen, int]:
    """Start `argv` (on `cpus` only, when given) and wait for a log line matching `pattern`;
    return it and the port the pattern's group captured. Its output keeps being drained so it
    never blocks on a pipe."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if cpus is not None:  # the threads it starts later (after its imports) inherit this
        os.sched_setaffinity(proc.pid, cpus)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(pattern, line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(match.group(1))
    raise RuntimeError(f"{argv} exited before listening (rc={proc.wait()})")


def server_argv(*flags: str) -> list[str]:
    """start_policy_server.py on an ephemeral loopback port, with `flags`."""
    return [sys.executable, str(ROOT / "start_policy_server.py"), "--host", "127.0.0.1",
            "--port", "0", *flags]


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def run_clients(client: Callable[[int], None], clients: int) -> float:
    """Run client(0) .. client(clients - 1) on threads at once; seconds until all finished."""
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU time (user + system) of process `pid`, or of its thread `tid`."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_node(*params: str) -> tuple[subprocess.Popen, list[str]]:
    """`python -m policy_server_ros` with `-p` params (name:=value), started and ready; its
    log lines keep arriving in the returned list."""
    argv = [sys.executable, "-m", "policy_server_ros", "--ros-args"]
    for param in params:
        argv += ["-p", param]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    log: list[str] = []
    for line in proc.stdout:
        log.append(line)
        if "policy_server ready" in line:
            break
    else:
        raise RuntimeError("node exited before it was ready:\n" + "".join(log))
    threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
    return proc, log
