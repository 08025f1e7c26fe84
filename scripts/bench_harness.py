"""Shared pieces of the benchmark scripts: starting server processes and writing results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_STARTED = r"Policy Server started on .*:(\d+)"


def start_process(argv: list[str], pattern: str = SERVER_STARTED) -> tuple[subprocess.Popen, int]:
    """Start `argv` and wait for a log line matching `pattern`; return it and the port the
    pattern's group captured. Its output keeps being drained so it never blocks on a pipe."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
