#!/usr/bin/env python3
"""Example client from the original guide: send observations, print what comes back.

    python policy_client_example.py --host localhost --port 5000 --num_requests 5 --delay 1.0
    python policy_client_example.py --execution_mode ensemble --num_requests 20 --delay 0.02

With --execution_mode, each of the --num_requests iterations is one control step: the node's chunk
scheduler (chunk, ensemble or aggregate; socket_bridge.scheduled_client) gives the command for
the step, asking the server for a new chunk only when one is due (--background: without
waiting for it).

`from policy_client_example import PolicyClient` gives the protocol's Python client.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from benchmark.base import MetaObs
from policy_server_ros.chunk_scheduler import AGGREGATE_FUNCTIONS, MODES, SchedulerConfig
from socket_bridge.client import PolicyClient
from socket_bridge.scheduled_client import ScheduledPolicyClient

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
    parser.add_argument("--execution_mode", choices=("none", *MODES), default="none",
                        help="one command per control step from the chunks: chunk, ensemble "
                             "(ACT's temporal ensembling) or aggregate; none prints the "
                             "replies (default: %(default)s)")
    parser.add_argument("--period", type=float, default=0.02,
                        help="time between a chunk's actions, s (default: %(default)s)")
    parser.add_argument("--aggregate_fn", choices=tuple(AGGREGATE_FUNCTIONS), default="weighted",
                        help="aggregate: how overlapping steps merge (default: %(default)s)")
    parser.add_argument("--refill_threshold", type=float, default=0.5,
                        help="chunk, aggregate: ask for a chunk when this share of the newest "
                             "one is left (default: %(default)s)")
    parser.add_argument("--background", action="store_true",
                        help="ask for chunks from a worker thread instead of waiting")
    args = parser.parse_args(argv)
    if args.period <= 0 or not 0 <= args.refill_threshold <= 1:
        parser.error("--period must be > 0 and --refill_threshold in [0, 1]")

    rng = np.random.default_rng(0)
    client = PolicyClient(args.host, args.port, max_retries=2, backoff=0.5)
    try:
        client.connect()
    except ConnectionError as exc:
        print(f"error: {exc}. Is the server running? Start it with "
              f"'python start_policy_server.py --port {args.port}'.", file=sys.stderr)
        return 1
    print(f"Connected to policy server at {args.host}:{args.port}")
    if args.execution_mode != "none":
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
    """--execution_mode: one control step per iteration; print each step's command."""
    config = SchedulerConfig(mode=args.execution_mode, period_s=args.period,
                             aggregate_fn=args.aggregate_fn, hold_timeout=0.1)
    controller = ScheduledPolicyClient(client, config, refill_threshold=args.refill_threshold,
                                       background=args.background)
    missing = 0
    for i in range(args.num_requests):
        queries = controller.queries
        try:
            action = controller.step(example_observation(rng, timestep=i))
        except (ConnectionError, OSError, RuntimeError) as exc:
            print(f"error: step {i + 1} failed: {exc}", file=sys.stderr)
            controller.close()
            return 1
        asked = "new chunk" if controller.queries > queries else "from the plan"
        if action is None:
            missing += 1
            print(f"Step {i + 1}: no action (server returned none; see the server log)")
        else:
            print(f"Step {i + 1}: action[:3] {np.round(action[:3], 4).tolist()} ({asked})")
        if i + 1 < args.num_requests:
            time.sleep(args.delay)
    controller.close()
    print(f"{args.num_requests} steps, {controller.queries} requests")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
