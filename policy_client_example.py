#!/usr/bin/env python3
"""Example client from the original guide: send observations, print what comes back.

    python policy_client_example.py --host localhost --port 5000 --num_requests 5 --delay 1.0
    python policy_client_example.py --schedule ensemble --num_requests 20 --delay 0.02

With --schedule, each of the --num_requests iterations is one control step: the node's chunk
scheduler (chunk, ensemble or aggregate) picks the action, asking the server for a new chunk only
when one is due.

`from policy_client_example import PolicyClient` gives the protocol's Python client.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from benchmark.base import MetaObs
from policy_server_ros.chunk_scheduler import MODES, SchedulerConfig
from policy_server_ros.scheduled_client import ScheduledPolicyClient
from socket_bridge.client import PolicyClient

__all__ = ["PolicyClient", "example_observation", "main"]


def example_observation(rng: np.random.Generator, timestep: int = 0) -> MetaObs:
    """What an ALOHA-like robot sends: 14-D joint state, one 480x640 RGB camera, an instruction."""
    return MetaObs(
        state=rng.uniform(-1.0, 1.0, size=14),  # float64, as the guide's client sends it
        image=rng.integers(0, 256, size=(1, 3, 480, 640), dtype=np.uint8),
        raw_lang="pick up the cube and transfer it to the other arm",
        timestep=timestep,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--host", default="localhost", help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="server port (default: %(default)s)")
    parser.add_argument("--num_requests", type=int, default=5,
                        help="observations to send (default: %(default)s)")
    parser.add_argument("--delay", type=float, default=1.0,
                        help="seconds between requests (default: %(default)s)")
    parser.add_argument("--schedule", choices=("off", *MODES), default="off",
                        help="one action per control step from the chunks: chunk, ensemble "
                             "(ACT's temporal ensembling) or aggregate (default: %(default)s)")
    parser.add_argument("--period", type=float, default=0.02,
                        help="control period in seconds, with --schedule (default: %(default)s)")
    parser.add_argument("--query_every", type=int, default=0,
                        help="with --schedule: ask for a chunk every N steps; 0 = when the plan "
                             "runs out, 1 for ensemble (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.period <= 0 or args.query_every < 0:
        parser.error("--period must be > 0 and --query_every >= 0")

    rng = np.random.default_rng(0)
    client = PolicyClient(args.host, args.port, max_retries=2, backoff=0.5)
    try:
        client.connect()
    except ConnectionError as exc:
        print(f"error: {exc}. Is the server running? Start it with "
              f"'python start_policy_server.py --port {args.port}'.", file=sys.stderr)
        return 1
    print(f"Connected to policy server at {args.host}:{args.port}")
    if args.schedule != "off":
        with client:
            return _run_scheduled(client, args, rng)
    failures = 0
    with client:
        for i in range(args.num_requests):
            obs = example_observation(rng, timestep=i)
            start = time.perf_counter()
            try:
                actions = client.send_meta_obs(obs)
            except (ConnectionError, OSError) as exc:
                print(f"error: request {i + 1} failed: {exc}", file=sys.stderr)
                return 1
            elapsed_ms = (time.perf_counter() - start) * 1e3
            if not actions:
                failures += 1
                print(f"Request {i + 1}: server returned no actions (inference error; "
                      f"see the server log) in {elapsed_ms:.1f} ms")
            else:
                first = actions[0]
                shape = np.shape(first.action if hasattr(first, "action") else first)
                print(f"Request {i + 1}: received {len(actions)} actions "
                      f"(first action shape {shape}) in {elapsed_ms:.1f} ms")
            if i + 1 < args.num_requests:
                time.sleep(args.delay)
    return 1 if failures else 0


def _run_scheduled(client: PolicyClient, args: argparse.Namespace,
                   rng: np.random.Generator) -> int:
    """--schedule: one control step per iteration; print each step's action."""
    query_every = args.query_every or (1 if args.schedule == "ensemble" else 0)
    controller = ScheduledPolicyClient(
        client, SchedulerConfig(mode=args.schedule, period_s=args.period),
        query_every=query_every)
    missing = 0
    for i in range(args.num_requests):
        queries = controller.queries
        try:
            action = controller.step(example_observation(rng, timestep=i))
        except (ConnectionError, OSError) as exc:
            print(f"error: step {i + 1} failed: {exc}", file=sys.stderr)
            return 1
        asked = "new chunk" if controller.queries > queries else "from the plan"
        if action is None:
            missing += 1
            print(f"Step {i + 1}: no action (server returned none; see the server log)")
        else:
            print(f"Step {i + 1}: action[:3] {np.round(action[:3], 4).tolist()} ({asked})")
        if i + 1 < args.num_requests:
            time.sleep(args.delay)
    print(f"{args.num_requests} steps, {controller.queries} requests")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
