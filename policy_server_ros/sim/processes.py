"""The policy server as a child process of the evaluation: the ROS 2 node (`python -m
policy_server_ros`) or the socket-only server (`start_policy_server`), its output in a log
file, started until its ready line and stopped with SIGINT (then SIGKILL, bounded)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NODE_READY = "policy_server ready"
SOCKET_READY = "Policy Server started on"


class PolicyProcessError(RuntimeError):
    """The policy server exited or never became ready; the message ends with its last log line."""


def ros_arg(value: Any) -> str:
    """A parameter value as `-p name:=value` takes it (YAML)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


class PolicyProcess:
    """A policy server child process; `log` holds its stdout and stderr."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], ready: str) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._file, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        self.ready = ready

    @classmethod
    def node(cls, params: dict[str, Any], log: Path, env: dict[str, str]) -> PolicyProcess:
        argv = [sys.executable, "-m", "policy_server_ros", "--ros-args"]
        for name, value in params.items():
            argv += ["-p", f"{name}:={ros_arg(value)}"]
        return cls(argv, log, env, NODE_READY)

    @classmethod
    def socket_server(cls, model: str, port: int, log: Path, env: dict[str, str],
                      extra: list[str]) -> PolicyProcess:
        argv = [sys.executable, "-m", "policy_server_ros.socket_server_cli",
                "--model_name_or_path", model, "--device", "cpu", "--host", "127.0.0.1",
                "--port", str(port), "--warmup_image_size", "8x8", *extra]
        return cls(argv, log, env, SOCKET_READY)

    def last_line(self) -> str:
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise PolicyProcessError(f"the policy server exited with code "
                                         f"{self.proc.returncode}: {self.last_line()} "
                                         f"(log: {self.log})")
            time.sleep(0.1)
        raise PolicyProcessError(f"the policy server was not ready after {timeout:.0f} s "
                                 f"(log: {self.log}): {self.last_line()}")

    def socket_port(self) -> int:
        match = re.search(r"started on [^:\s]+:(\d+)", self.log.read_text(errors="replace"))
        if match is None:
            raise PolicyProcessError(f"no port in the socket server's log {self.log}")
        return int(match.group(1))

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:  # Fast DDS can hang in destroy_node
                self.proc.kill()
                self.proc.wait(5)
        self._file.close()
        return self.proc.returncode


def child_env(domain: int | None, large_images: bool) -> dict[str, str]:
    """The environment of the loop's processes: this one's, kept on this machine, on the ROS
    domain `domain` when given, with a large shared-memory segment for camera frames."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if domain is not None:
        env["ROS_DOMAIN_ID"] = str(domain)
    profile = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_shm.xml"
    if large_images and "FASTDDS_DEFAULT_PROFILES_FILE" not in env and profile.exists():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env
