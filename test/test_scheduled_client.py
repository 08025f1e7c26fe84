"""ScheduledPolicyClient and policy_client_example.py --schedule against a real socket server
(builtin echo: step i of a chunk is state + 0.01 * i)."""

from __future__ import annotations

import numpy as np
from conftest import running_server

import policy_client_example
from benchmark.base import MetaAction, MetaObs
from policy_server_ros.chunk_scheduler import SchedulerConfig
from policy_server_ros.policies.builtin import EchoPolicy
from policy_server_ros.scheduled_client import ScheduledPolicyClient, reply_actions
from socket_bridge.client import PolicyClient


def test_ensemble_over_the_socket_in_exact_numbers() -> None:
    chunk = 5
    with running_server(EchoPolicy(chunk_size=chunk)) as server, \
            PolicyClient(*server.address) as client:
        controller = ScheduledPolicyClient(client, SchedulerConfig(mode="ensemble"),
                                           query_every=1)
        for t in range(8):
            action = controller.step(MetaObs(state=np.zeros(14)))
            starts = range(max(0, t - chunk + 1), t + 1)  # chunks covering step t, oldest first
            weights = np.exp(-0.01 * np.arange(len(starts)))
            expected = float(np.dot(weights / weights.sum(), [0.01 * (t - s) for s in starts]))
            np.testing.assert_allclose(action, np.full(14, expected), rtol=0, atol=1e-6)
        assert controller.queries == 8


def test_chunk_mode_asks_only_when_the_plan_runs_out_and_reset_starts_over() -> None:
    with running_server(EchoPolicy(chunk_size=3)) as server, \
            PolicyClient(*server.address) as client:
        controller = ScheduledPolicyClient(client, SchedulerConfig(mode="chunk"))
        actions = [controller.step(MetaObs(state=np.full(14, t, dtype=np.float64)))[0]
                   for t in range(7)]
        # Requests at steps 0, 3 and 6, each answered with its own state + 0.01 * i.
        np.testing.assert_allclose(actions, [0, 0.01, 0.02, 3, 3.01, 3.02, 6], atol=1e-6)
        assert controller.queries == 3
        controller.reset()
        assert controller.step(MetaObs(state=np.full(14, 9.0)))[0] == 9.0
        assert controller.queries == 4


def test_reply_actions_reads_both_reply_forms() -> None:
    unbatched = [MetaAction(action=np.array([1.0, 2.0])), MetaAction(action=np.array([3.0, 4.0]))]
    batched = []
    for row in ([1.0, 2.0], [3.0, 4.0]):
        entries = np.empty(1, dtype=object)
        entries[0] = {"action": np.array(row, np.float32)}
        batched.append(entries)
    assert reply_actions(unbatched).tolist() == [[1, 2], [3, 4]]
    assert reply_actions(batched).tolist() == [[1, 2], [3, 4]]


def test_the_example_client_with_schedule(capsys) -> None:
    with running_server(EchoPolicy(chunk_size=5)) as server:
        host, port = server.address
        assert policy_client_example.main(["--host", host, "--port", str(port), "--schedule",
                                           "chunk", "--num_requests", "7", "--delay", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("(new chunk)") == 2 and out.count("(from the plan)") == 5
    assert "7 steps, 2 requests" in out
