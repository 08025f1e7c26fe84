"""The chunk scheduler (no ROS): which action each control step gets, in exact numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policy_server_ros.chunk_scheduler import ChunkScheduler, SchedulerConfig

MS = 1_000_000
P = 20 * MS  # one step at 50 Hz


def _chunk(values: list[float], dim: int = 1) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=np.float64)[:, None], dim, axis=1)


def _run(scheduler: ChunkScheduler, times: list[int]) -> list[float | None]:
    out = []
    for t in times:
        command = scheduler.step(t)
        out.append(None if command is None else float(command.action[0]))
    return out


def test_chunk_mode_skips_the_steps_inference_took_and_a_newer_chunk_replaces_the_plan() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", period_s=0.02))
    assert s.step(0) is None  # nothing yet
    # Observation at 1000 ms, chunk arrives 40 ms later: steps 0 and 1 are already past.
    s.add_chunk(_chunk([10, 11, 12, 13, 14]), stamp_ns=1000 * MS, received_ns=1040 * MS)
    assert _run(s, [1040 * MS, 1060 * MS, 1069 * MS]) == [12, 13, 13]  # nearest step
    s.add_chunk(_chunk([20, 21, 22, 23]), stamp_ns=1040 * MS, received_ns=1075 * MS)
    assert _run(s, [1080 * MS, 1100 * MS, 1120 * MS]) == [22, 23, None]
    # An older observation's chunk arriving late does not replace the plan.
    assert not s.add_chunk(_chunk([99, 99]), stamp_ns=1020 * MS, received_ns=1121 * MS)
    assert s.counts.chunks_refused == 1 and s.counts.chunks == 2 and s.counts.idle == 2


def test_without_latency_compensation_step_0_is_when_the_chunk_arrived() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", latency_compensation=False))
    s.add_chunk(_chunk([10, 11, 12, 13, 14]), stamp_ns=1000 * MS, received_ns=1040 * MS)
    assert _run(s, [1040 * MS, 1060 * MS, 1080 * MS]) == [10, 11, 12]


def test_ensemble_weights_the_oldest_prediction_most_as_act_does() -> None:
    k = 0.01
    s = ChunkScheduler(SchedulerConfig(mode="ensemble", ensemble_decay=k))
    s.add_chunk(_chunk([1, 1, 1]), stamp_ns=0)
    s.add_chunk(_chunk([2, 2, 2]), stamp_ns=P)
    assert _run(s, [0]) == [1.0]
    w0, w1 = 1.0, math.exp(-k)  # i = 0: the oldest chunk (ACT: exp(-k * arange(n)))
    (step1,) = _run(s, [P])
    assert step1 == pytest.approx((1 * w0 + 2 * w1) / (w0 + w1), abs=1e-15)
    assert step1 < 1.5  # the older prediction weighs more
    # A chunk that arrives out of order still counts as the older one.
    s2 = ChunkScheduler(SchedulerConfig(mode="ensemble", ensemble_decay=1.0))
    s2.add_chunk(_chunk([2, 2, 2]), stamp_ns=P)
    s2.add_chunk(_chunk([1, 1, 1]), stamp_ns=0)
    assert _run(s2, [P]) == [pytest.approx((1 + 2 * math.exp(-1)) / (1 + math.exp(-1)))]


def test_ensemble_equals_act_s_own_loop_over_an_episode() -> None:
    # ACT's imitate_episodes.py, query every step: all_time_actions[[t], t:t+Q] = chunk; the
    # populated rows of column t, oldest first, weighted exp(-0.01 * arange(n)) normalized.
    rng = np.random.default_rng(0)
    steps, q, dim = 12, 5, 3
    chunks = rng.normal(size=(steps, q, dim))
    table = np.zeros((steps, steps + q, dim))
    s = ChunkScheduler(SchedulerConfig(mode="ensemble", ensemble_decay=0.01))
    for t in range(steps):
        table[t, t:t + q] = chunks[t]
        column = table[:, t]
        rows = column[np.all(column != 0, axis=1)]
        weights = np.exp(-0.01 * np.arange(len(rows)))
        expected = ((weights / weights.sum())[:, None] * rows).sum(axis=0)
        s.add_chunk(chunks[t], stamp_ns=t * P)
        np.testing.assert_allclose(s.step(t * P).action, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("fn", "expected"), [
    ("weighted", [0.3 * 2 + 0.7 * 10, 0.3 * 3 + 0.7 * 11, 12]),
    ("latest", [10, 11, 12]),
    ("average", [6, 7, 12]),
    ("conservative", [0.7 * 2 + 0.3 * 10, 0.7 * 3 + 0.3 * 11, 12]),
])
def test_aggregate_merges_the_shared_steps(fn: str, expected: list[float]) -> None:
    s = ChunkScheduler(SchedulerConfig(mode="aggregate", aggregate_fn=fn))
    s.add_chunk(_chunk([0, 1, 2, 3]), stamp_ns=0)
    s.add_chunk(_chunk([10, 11, 12]), stamp_ns=2 * P)  # shares steps 2 and 3
    assert _run(s, [2 * P, 3 * P, 4 * P]) == [pytest.approx(v, abs=1e-12) for v in expected]


def test_hold_repeats_the_last_absolute_action_then_stops() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", hold_timeout=0.05))
    s.add_chunk(_chunk([5, 6]), stamp_ns=0)
    commands = [s.step(t * P) for t in range(6)]
    assert [None if c is None else (float(c.action[0]), c.held) for c in commands] == [
        (5, False), (6, False), (6, True), (6, True), None, None]  # held until 20 + 50 ms
    assert (s.counts.commands, s.counts.held, s.counts.idle) == (2, 2, 2)


def test_hold_sends_zero_deltas() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", hold_timeout=1.0, ctrl_type="delta"))
    s.add_chunk(_chunk([0.5, 0.5], dim=2), stamp_ns=0)
    s.step(0)
    s.step(P)
    command = s.step(2 * P)
    assert command.held and command.action.tolist() == [0.0, 0.0]


def test_clamps_limit_the_change_per_step_then_the_bounds() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", max_command_step=[0.1, 1.0],
                                       command_min=[-1.0, 0.0], command_max=[1.0, 0.5]))
    s.add_chunk(np.array([[0.0, 0.2], [0.5, 0.9], [0.55, -0.3]]), stamp_ns=0)
    first, second, third = (s.step(t * P) for t in range(3))
    assert first.action.tolist() == [0.0, 0.2] and not first.clamped
    assert second.action.tolist() == pytest.approx([0.1, 0.5]) and second.clamped
    assert third.action.tolist() == pytest.approx([0.2, 0.0]) and third.clamped
    assert s.counts.clamped == 2


def test_max_step_bounds_deltas_themselves() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", ctrl_type="delta", max_command_step=[0.05]))
    s.add_chunk(np.array([[0.2, -0.01]]), stamp_ns=0)
    assert s.step(0).action.tolist() == [0.05, -0.01]


def test_reset_forgets_the_plan_and_the_last_command() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", hold_timeout=10.0))
    s.add_chunk(_chunk([1, 2]), stamp_ns=0)
    s.step(0)
    s.reset()
    assert s.step(P) is None
    assert s.add_chunk(_chunk([3]), stamp_ns=-P)  # nothing newer to be refused against


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "smooth"}, "execution_mode 'smooth' is not one of"),
    ({"aggregate_fn": "max"}, "aggregate_fn 'max' is not one of"),
    ({"period_s": 0.0}, "period_s must be > 0"),
    ({"max_command_step": [-1.0]}, "max_command_step must be >= 0"),
    ({"command_min": [1.0], "command_max": [0.0]}, "is above command_max"),
])
def test_bad_configs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulerConfig(**kwargs)


@pytest.mark.parametrize("mode", ["ensemble", "aggregate"])
@pytest.mark.parametrize("ctrl_type", ["delta", "relative"])
def test_ensemble_and_aggregate_refuse_delta_and_relative_chunks(mode: str, ctrl_type: str
                                                                ) -> None:
    with pytest.raises(ValueError) as info:
        SchedulerConfig(mode=mode, ctrl_type=ctrl_type)
    message = str(info.value)
    assert "\n" not in message and f"execution_mode {mode}" in message
    assert f"these are {ctrl_type} actions" in message and "use execution_mode chunk" in message
    SchedulerConfig(mode="chunk", ctrl_type=ctrl_type)  # what they play in


def test_limits_must_fit_the_action_dimension_and_chunks_must_be_finite() -> None:
    with pytest.raises(ValueError, match="command_max has 2 values; give 1 or one per action"):
        SchedulerConfig(command_max=[1.0, 2.0]).check_dim(14)
    SchedulerConfig(command_max=[1.0]).check_dim(14)
    with pytest.raises(ValueError, match="non-finite"):
        ChunkScheduler(SchedulerConfig()).add_chunk(np.array([[np.nan]]), stamp_ns=0)


def test_ensemble_of_three_overlapping_chunks_is_the_hand_computed_weighted_mean() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="ensemble", ensemble_decay=0.5))
    # Chunks from observations at 0, 20 and 40 ms (4 steps each); at 60 ms they hold steps
    # 3, 2 and 1: 13, 22 and 31.
    s.add_chunk(_chunk([10, 11, 12, 13]), stamp_ns=0)
    s.add_chunk(_chunk([30, 31, 32, 33]), stamp_ns=2 * P)  # arrives before the middle one
    s.add_chunk(_chunk([20, 21, 22, 23]), stamp_ns=P)
    w = [1.0, math.exp(-0.5), math.exp(-1.0)]  # oldest observation first
    expected = (13 * w[0] + 22 * w[1] + 31 * w[2]) / sum(w)
    assert _run(s, [3 * P]) == [pytest.approx(expected, abs=1e-12)]
    # At 80 ms the first chunk is used up: two remain, re-weighted from j = 0.
    assert _run(s, [4 * P]) == [pytest.approx((23 + 32 * math.exp(-0.5))
                                              / (1 + math.exp(-0.5)), abs=1e-12)]


def test_a_faster_control_rate_repeats_each_step_and_never_plays_one_early_by_more_than_half() \
        -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk", period_s=0.02))
    s.add_chunk(_chunk([0, 1, 2]), stamp_ns=0)
    times = [t * 5 * MS for t in range(10)]  # 200 Hz
    assert _run(s, times) == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]  # step i from i * 20 ms - 10 ms


def test_remaining_fraction_is_the_share_of_the_newest_chunk_still_ahead() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="chunk"))
    assert s.remaining_fraction(0) == 0.0  # nothing: a chunk is due
    s.add_chunk(_chunk([0] * 10), stamp_ns=0, received_ns=3 * P)
    assert s.remaining_fraction(3 * P) == pytest.approx(0.7)  # 3 steps went to inference
    assert s.remaining_fraction(9 * P) == pytest.approx(0.1)
    assert s.remaining_fraction(10 * P) == 0.0
    assert s.remaining_fraction(-5 * P) == 1.0


def test_chunks_of_different_lengths_are_each_used_for_their_own_steps() -> None:
    s = ChunkScheduler(SchedulerConfig(mode="ensemble", ensemble_decay=0.0))
    s.add_chunk(_chunk([1, 1]), stamp_ns=0)
    s.add_chunk(_chunk([3, 3, 3, 3]), stamp_ns=0)
    assert _run(s, [P, 2 * P, 3 * P, 4 * P]) == [2.0, 3.0, 3.0, None]
    with pytest.raises(ValueError, match="2-D actions after 1-D ones; reset first"):
        s.add_chunk(np.zeros((2, 2)), stamp_ns=0)
