"""ScheduledPolicyClient and policy_client_example.py --execution_mode against a real socket
server (builtin echo: step i of a chunk is state + 0.01 * i; the tests put the step number k in
the state, so a command says which request's chunk and which step of it was played)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import running_server

import policy_client_example
from benchmark.base import MetaAction, MetaObs
from policy_server_ros.chunk_scheduler import ChunkScheduler, SchedulerConfig
from policy_server_ros.policies.builtin import EchoPolicy
from socket_bridge.client import PolicyClient
from socket_bridge.scheduled_client import ScheduledPolicyClient, reply_actions

P = 20_000_000  # ns, the default period


def _obs(k: int) -> MetaObs:
    return MetaObs(state=np.full(14, float(k)))


def test_ensemble_over_the_socket_in_exact_numbers() -> None:
    chunk = 5
    with running_server(EchoPolicy(chunk_size=chunk)) as server, \
            PolicyClient(*server.address) as client:
        controller = ScheduledPolicyClient(client, SchedulerConfig(mode="ensemble"))
        for t in range(8):
            action = controller.step(MetaObs(state=np.zeros(14)))
            starts = range(max(0, t - chunk + 1), t + 1)  # chunks covering step t, oldest first
            weights = np.exp(-0.01 * np.arange(len(starts)))
            expected = float(np.dot(weights / weights.sum(), [0.01 * (t - s) for s in starts]))
            np.testing.assert_allclose(action, np.full(14, expected), rtol=0, atol=1e-6)
        assert controller.queries == 8  # ensemble asks every step


@pytest.mark.parametrize(("threshold", "requests", "expected"), [
    (0.5, [0, 2, 4, 6], [0, 0.01, 2, 2.01, 4, 4.01, 6]),  # half of a 4-step chunk left
    (0.0, [0, 4], [0, 0.01, 0.02, 0.03, 4, 4.01, 4.02]),  # only when the plan is used up
])
def test_chunk_mode_asks_when_the_plan_falls_to_the_refill_threshold(
        threshold: float, requests: list[int], expected: list[float]) -> None:
    with running_server(EchoPolicy(chunk_size=4)) as server, \
            PolicyClient(*server.address) as client:
        controller = ScheduledPolicyClient(client, SchedulerConfig(mode="chunk"),
                                           refill_threshold=threshold)
        actions = [controller.step(_obs(t))[0] for t in range(7)]
        np.testing.assert_allclose(actions, expected, atol=1e-6)
        assert controller.queries == len(requests)
        controller.reset()  # a new episode: step 0 asks again
        assert controller.step(_obs(9))[0] == 9.0
        assert controller.queries == len(requests) + 1


def test_the_client_loop_gets_the_commands_the_scheduler_computes_offline() -> None:
    config = SchedulerConfig(mode="aggregate", aggregate_fn="weighted", hold_timeout=0.0)
    with running_server(EchoPolicy(chunk_size=6)) as server, \
            PolicyClient(*server.address) as client:
        controller = ScheduledPolicyClient(client, config, refill_threshold=0.5)
        online = [controller.step(_obs(t)) for t in range(15)]
        asked = controller.queries
    # Offline: the same chunks (echo of the step they were asked at), at the same stamps.
    offline, scheduler = [], ChunkScheduler(config)
    for t in range(15):
        if scheduler.remaining_fraction(t * P) <= 0.5:
            scheduler.add_chunk(EchoPolicy(chunk_size=6).forward(
                MetaObs(state=np.full((1, 14), float(t))))[0], stamp_ns=t * P)
        offline.append(scheduler.step(t * P).action)
    assert asked == scheduler.counts.chunks == 5  # steps 0, 3, 6, 9, 12
    np.testing.assert_allclose(np.stack(online), np.stack(offline), rtol=0, atol=1e-6)
    # The merge mattered: at step 3 the plan of step 0 (0.03) and the new chunk (3.00) overlap.
    assert online[3][0] == pytest.approx(0.3 * 0.03 + 0.7 * 3.0, abs=1e-6)


def test_background_refill_answers_from_the_plan_and_skips_the_steps_a_request_took() -> None:
    period = 0.02
    with running_server(EchoPolicy(chunk_size=10)) as server, \
            PolicyClient(*server.address) as client, \
            ScheduledPolicyClient(client, SchedulerConfig(mode="chunk", period_s=period,
                                                          hold_timeout=0.5),
                                  refill_threshold=0.5, background=True) as controller:
        start, played = time.monotonic(), []
        for k in range(40):
            target = start + k * period
            time.sleep(max(0.0, target - time.monotonic()))
            action = controller.step(_obs(k))
            if action is not None:
                played.append((k, action[0]))
        queries = controller.queries
    assert len(played) >= 30 and 3 <= queries < 20
    for k, value in played:
        k_obs = int(np.floor(value + 1e-6))  # the step whose observation made the chunk
        step = round((value - k_obs) / 0.01)
        assert k_obs <= k and abs(step - (k - k_obs)) <= 2, (k, value)  # its step for now
    assert len({int(np.floor(v + 1e-6)) for _, v in played}) >= 3


def test_reply_actions_reads_both_reply_forms() -> None:
    unbatched = [MetaAction(action=np.array([1.0, 2.0])), MetaAction(action=np.array([3.0, 4.0]))]
    batched = []
    for row in ([1.0, 2.0], [3.0, 4.0]):
        entries = np.empty(1, dtype=object)
        entries[0] = {"action": np.array(row, np.float32)}
        batched.append(entries)
    assert reply_actions(unbatched).tolist() == [[1, 2], [3, 4]]
    assert reply_actions(batched).tolist() == [[1, 2], [3, 4]]


def test_the_example_client_with_an_execution_mode(capsys) -> None:
    with running_server(EchoPolicy(chunk_size=5)) as server:
        host, port = server.address
        assert policy_client_example.main(["--host", host, "--port", str(port),
                                           "--execution_mode", "chunk", "--refill_threshold",
                                           "0", "--num_requests", "7", "--delay", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("(new chunk)") == 2 and out.count("(from the plan)") == 5
    assert "7 steps, 2 requests" in out
