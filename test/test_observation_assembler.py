"""Time synchronization, staleness and the newest-wins rule of observation assembly."""

from __future__ import annotations

import numpy as np
import pytest

from policy_server_ros.observation_assembler import (
    AssemblerConfig,
    AssemblyError,
    ObservationAssembler,
)

MS = 1_000_000
IMG = np.zeros((3, 4, 5), np.uint8)


def _assembler(**kw) -> ObservationAssembler:
    return ObservationAssembler(AssemblerConfig(**{"slop_s": 0.01, "max_age_s": 0.5, **kw}))


def test_a_complete_set_within_slop_becomes_one_observation() -> None:
    a = _assembler()
    a.add("camera/0", 1000 * MS, IMG)
    assert a.assemble(1001 * MS) is None and a.missing() == ["joints"]
    a.add("joints", 1005 * MS, np.arange(3, dtype=np.float32))
    out = a.assemble(1010 * MS)
    assert out is not None and out.stamp_ns == 1005 * MS
    assert out.obs.image.shape == (1, 3, 4, 5) and out.obs.state.tolist() == [0, 1, 2]
    assert out.obs.timestep == 0 and out.input_stamps_ns == {"camera/0": 1000 * MS,
                                                             "joints": 1005 * MS}
    assert a.assemble(1011 * MS) is None  # each set once


def test_messages_further_apart_than_slop_do_not_pair() -> None:
    a = _assembler()
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 1020 * MS, np.zeros(3))
    assert a.assemble(1030 * MS) is None


def test_the_newest_complete_set_wins() -> None:
    a = _assembler()
    for t in (100, 133, 166, 200):
        a.add("camera/0", t * MS, IMG + t % 256)
        a.add("joints", (t + 2) * MS, np.full(3, t, np.float32))
    out = a.assemble(210 * MS)
    assert out.obs.state[0] == 200 and out.obs.image[0, 0, 0, 0] == 200 % 256
    assert a.assemble(211 * MS) is None


def test_stale_sets_never_trigger_and_are_reported() -> None:
    a = _assembler(max_age_s=0.1)
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 1000 * MS, np.zeros(3))
    assert a.assemble(1200 * MS) is None and a.stale_skipped == 1
    assert [name for name, _ in a.stale_inputs(1200 * MS)] == ["camera/0", "joints"]


def test_a_lagging_camera_pairs_with_the_matching_older_joint_state() -> None:
    a = _assembler(slop_s=0.005)
    for t in range(100, 200, 10):
        a.add("joints", t * MS, np.full(3, t, np.float32))
    a.add("camera/0", 151 * MS, IMG)  # the bottleneck input decides the set
    out = a.assemble(200 * MS)
    assert out.obs.state[0] == 150 and out.stamp_ns == 151 * MS


def test_state_concatenates_in_the_configured_order_and_language_is_latched() -> None:
    a = _assembler(has_ee=True, has_language=True, required=("cameras", "joints", "ee"),
                   state_parts=("ee", "joints"))
    a.add("language", 1 * MS, "pick up the cube")
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 1000 * MS, np.array([1, 2], np.float32))
    a.add("ee", 1000 * MS, np.array([9, 8, 7, 0, 0, 0, 1], np.float32))
    out = a.assemble(1000 * MS)
    assert out.obs.state.tolist() == [9, 8, 7, 0, 0, 0, 1, 1, 2]
    assert out.obs.raw_lang == "pick up the cube"
    a.add("camera/0", 1100 * MS, IMG)
    a.add("joints", 1100 * MS, np.array([1, 2], np.float32))
    a.add("ee", 1100 * MS, np.zeros(7, np.float32))
    second = a.assemble(1100 * MS)
    assert second.obs.raw_lang == "pick up the cube" and second.obs.timestep == 1


def test_required_language_must_have_arrived() -> None:
    a = _assembler(has_language=True, required=("cameras", "joints", "language"))
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 1000 * MS, np.zeros(3))
    assert a.assemble(1000 * MS) is None and a.missing() == ["language"]


def test_cameras_of_different_sizes_are_an_error() -> None:
    a = _assembler(cameras=2)
    a.add("camera/0", 1000 * MS, IMG)
    a.add("camera/1", 1000 * MS, np.zeros((3, 8, 8), np.uint8))
    a.add("joints", 1000 * MS, np.zeros(3))
    with pytest.raises(AssemblyError, match="different sizes"):
        a.assemble(1000 * MS)


@pytest.mark.parametrize(("kw", "message"), [
    ({"required": ("cameras", "lidar")}, "not among"),
    ({"required": ("cameras", "ee")}, "no topic configured"),
    ({"state_parts": ("ee",)}, "state inputs .* have no topic"),
    ({"required": ()}, "at least one timed input"),
    ({"max_age_s": 0}, "maximum observation age"),
])
def test_configuration_errors(kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        AssemblerConfig(**kw)


def test_a_state_input_must_be_required() -> None:
    # Before: with ee optional, a set without ee was emitted with state=None.
    with pytest.raises(ValueError, match=r"state inputs \['ee'\] are not in required_inputs"):
        AssemblerConfig(has_ee=True, state_parts=("joints", "ee"))
    a = _assembler(has_ee=True, required=("cameras", "joints", "ee"), state_parts=("joints", "ee"))
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 1000 * MS, np.zeros(3, np.float32))
    assert a.assemble(1000 * MS) is None and a.missing() == ["ee"]  # no state, no observation


def test_a_fast_optional_input_does_not_make_the_next_set_look_emitted() -> None:
    a = _assembler(has_ee=True, slop_s=0.05)  # ee optional, not part of state
    a.add("camera/0", 100 * MS, IMG)
    a.add("joints", 100 * MS, np.zeros(3, np.float32))
    a.add("ee", 130 * MS, np.zeros(7, np.float32))  # newer than the set, within slop
    first = a.assemble(131 * MS)
    assert first is not None and first.stamp_ns == 100 * MS
    assert first.input_stamps_ns["ee"] == 130 * MS
    a.add("camera/0", 120 * MS, IMG)
    a.add("joints", 120 * MS, np.ones(3, np.float32))
    second = a.assemble(132 * MS)  # before: skipped, as 120 ms <= the optional ee's 130 ms
    assert second is not None and second.stamp_ns == 120 * MS and second.obs.state[0] == 1


def test_a_stale_set_is_counted_once_however_often_it_is_seen() -> None:
    a = _assembler(max_age_s=0.1)
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 1000 * MS, np.zeros(3))
    for now in range(1200, 1210):  # every message triggers an attempt
        assert a.assemble(now * MS) is None
    assert a.stale_skipped == 1
    a.add("camera/0", 1010 * MS, IMG)
    a.add("joints", 1010 * MS, np.zeros(3))
    for now in range(1300, 1305):
        assert a.assemble(now * MS) is None
    assert a.stale_skipped == 2


def test_a_camera_frame_is_not_reused_by_the_next_observation() -> None:
    # Each required message is in at most one observation: a new camera frame that cannot pair
    # must not trigger the previous frame again with a later joint state.
    a = _assembler()  # slop 10 ms
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 995 * MS, np.zeros(3, np.float32))
    a.add("joints", 1003 * MS, np.zeros(3, np.float32))
    assert a.assemble(1004 * MS).input_stamps_ns == {"camera/0": 1000 * MS, "joints": 1003 * MS}
    a.add("joints", 1013 * MS, np.full(3, 1013, np.float32))
    assert a.assemble(1013 * MS) is None
    a.add("camera/0", 1033 * MS, IMG)
    a.add("joints", 1050 * MS, np.full(3, 1050, np.float32))  # a gap: none within slop of 1033
    assert a.assemble(1050 * MS) is None  # before: camera 1000 ms again, with joints 1013 ms
    a.add("camera/0", 1066 * MS, IMG)
    a.add("joints", 1066 * MS, np.full(3, 1066, np.float32))
    out = a.assemble(1067 * MS)
    assert out.input_stamps_ns == {"camera/0": 1066 * MS, "joints": 1066 * MS}
    assert out.obs.timestep == 1


def test_the_next_camera_frame_is_not_skipped_after_a_late_joint_state() -> None:
    # The last set's newest stamp (joints 140 ms) is newer than the next camera frame (133 ms);
    # that frame is still new and pairs with the next joint state.
    a = _assembler(slop_s=0.05)
    for t in (35, 45, 55):
        a.add("joints", t * MS, np.zeros(3, np.float32))
    a.add("camera/0", 100 * MS, IMG)
    a.add("joints", 140 * MS, np.ones(3, np.float32))  # a gap in the joint states
    first = a.assemble(141 * MS)
    assert first.input_stamps_ns == {"camera/0": 100 * MS, "joints": 140 * MS}
    a.add("camera/0", 133 * MS, IMG)
    a.add("joints", 150 * MS, np.full(3, 2, np.float32))
    second = a.assemble(151 * MS)  # before: None (133 ms <= 140 ms), the frame was skipped
    assert second is not None
    assert second.input_stamps_ns == {"camera/0": 133 * MS, "joints": 150 * MS}


def test_a_stale_observation_counts_once_when_a_new_joint_state_pairs_with_it() -> None:
    a = _assembler(max_age_s=0.1)  # slop 10 ms
    a.add("camera/0", 1000 * MS, IMG)
    a.add("joints", 995 * MS, np.zeros(3))
    assert a.assemble(1200 * MS) is None and a.stale_skipped == 0  # undecided: not yet counted
    a.add("joints", 1003 * MS, np.zeros(3))  # nearer the same camera frame than 995 ms
    assert a.assemble(1200 * MS) is None and a.stale_skipped == 1
    a.add("joints", 1004 * MS, np.zeros(3))
    for now in range(1201, 1206):
        assert a.assemble(now * MS) is None
    assert a.stale_skipped == 1  # before: 2, the same camera frame counted again


@pytest.mark.parametrize("late_ms", [1, 1000])
def test_stale_observations_are_counted_as_the_observations_they_would_have_been(
        late_ms: int) -> None:
    # Live (stamps fresh) or delayed by a second (all stale), the same messages make the same
    # number of observations: run, or counted in stale_skipped, once each, however often
    # assemble() is called (the node calls it on every required message).
    a = _assembler(max_age_s=0.1)
    camera = range(1000, 1400, 33)
    joints = range(995, 1410, 10)  # the last frame is decided by a joint state after it
    arrivals = sorted([(t, "camera/0") for t in camera] + [(t, "joints") for t in joints])
    ran = 0
    for t, name in arrivals:
        a.add(name, t * MS, IMG if name == "camera/0" else np.zeros(3, np.float32))
        for _ in range(3):
            ran += a.assemble((t + late_ms) * MS) is not None
    assert ran + a.stale_skipped == len(camera)
    assert (ran, a.stale_skipped) == ((len(camera), 0) if late_ms == 1 else (0, len(camera)))


def test_the_node_parameters_refuse_a_state_input_that_is_not_required() -> None:
    # The node and the bag evaluator build their config here; the node turns this ValueError
    # into a one-line start-up error.
    from policy_server_ros.inputs import assembler_config, node_params

    params = node_params(ee_pose_topic="/ee_pose", state_inputs=["joints", "ee"])
    with pytest.raises(ValueError, match=r"\['ee'\] are not in required_inputs.*add them"):
        assembler_config(params)
    params["required_inputs"] = ["cameras", "joints", "ee"]
    assert assembler_config(params).state_parts == ("joints", "ee")


def test_a_joint_state_delivered_after_the_frames_still_pairs_with_them() -> None:
    # CI failure: cameras at 25 Hz and joint states at 50 Hz on the same ticks; the node's
    # executor took both frames of tick 40 ms before that tick's joint state (which the bag
    # logged first). The unused joint state of 20 ms became the set's reference and paired
    # with the new frames; the rosbag evaluator, reading in log order, paired 40 ms with 40 ms.
    a = _assembler(cameras=2, slop_s=0.05)
    for t in (-40, -20, 0):
        a.add("joints", t * MS, np.full(3, t, np.float32))
    for i in (0, 1):
        a.add(f"camera/{i}", 0, IMG)
    assert a.assemble(1 * MS).input_stamps_ns == dict.fromkeys(("camera/0", "camera/1",
                                                                "joints"), 0)
    a.add("joints", 20 * MS, np.full(3, 20, np.float32))
    assert a.assemble(21 * MS) is None
    for i in (0, 1):
        a.add(f"camera/{i}", 40 * MS, IMG)
        assert a.assemble(42 * MS) is None  # before: frames of 40 ms with joints of 20 ms
    a.add("joints", 40 * MS, np.full(3, 40, np.float32))
    out = a.assemble(43 * MS)
    assert out.input_stamps_ns == dict.fromkeys(("camera/0", "camera/1", "joints"), 40 * MS)
    assert out.obs.state[0] == 40


def _delivered(arrivals: list[tuple[int, int, str]], seed: int | None) -> list[dict]:
    """Feed (arrival, stamp, input) messages to a fresh assembler in arrival order (shuffled
    arrival times when seed is given, per-input order kept) and return what it emitted."""
    a = _assembler(cameras=2, slop_s=0.03, max_age_s=1.0)
    if seed is not None:
        rng = np.random.default_rng(seed)
        arrivals = [(stamp + int(rng.integers(0, 100)) * MS, stamp, name)
                    for _, stamp, name in arrivals]
        last: dict[str, int] = {}
        for i, (arrival, stamp, name) in enumerate(arrivals):  # one topic stays in order
            arrivals[i] = (max(arrival, last.get(name, 0)), stamp, name)
            last[name] = arrivals[i][0]
    out = []
    for arrival, stamp, name in sorted(arrivals):
        a.add(name, stamp, IMG if name.startswith("camera") else np.zeros(3, np.float32))
        assembled = a.assemble(arrival)
        if assembled is not None:
            out.append(assembled.input_stamps_ns)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_the_observations_do_not_depend_on_the_order_messages_arrive_across_inputs(
        seed: int) -> None:
    # Cameras at 25 Hz, joint states at 100 Hz offset by 3 ms; each message delayed 0-100 ms
    # (up to 2.5 camera intervals), each input in order. The same observations as when
    # everything arrives in stamp order.
    cameras = [(t, t, f"camera/{i}") for t in range(0, 2000 * MS, 40 * MS) for i in (0, 1)]
    joints = [(t, t, "joints") for t in range(3 * MS, 2050 * MS, 10 * MS)]
    arrivals = sorted(cameras + joints)
    in_order = _delivered(arrivals, None)
    assert len(in_order) == 50
    assert _delivered(arrivals, seed) == in_order


def test_frames_that_overtook_a_lagging_joint_stream_are_all_used_in_order() -> None:
    # CI failure: after a stall the executor took one message per subscription per round, so
    # the camera frames of 40 and 80 ms came before the joint states of 40 ms and later. Before:
    # 80 ms was the newest set, undecided, and blocked 40 ms, which was then skipped.
    a = _assembler(slop_s=0.05)
    for t in (0, 20):
        a.add("joints", t * MS, np.full(3, t, np.float32))
    a.add("camera/0", 0, IMG)
    assert a.assemble(1 * MS).input_stamps_ns == {"camera/0": 0, "joints": 0}
    for t in (40, 80):
        a.add("camera/0", t * MS, IMG)
        assert a.assemble(t * MS) is None
    emitted = []
    for t in (40, 60, 80):
        a.add("joints", t * MS, np.full(3, t, np.float32))
        out = a.assemble(t * MS)
        if out is not None:
            emitted.append(out.input_stamps_ns)
    assert emitted == [{"camera/0": 40 * MS, "joints": 40 * MS},
                       {"camera/0": 80 * MS, "joints": 80 * MS}]


def test_a_set_used_without_building_still_counts_in_the_timestep() -> None:
    a = _assembler()
    for k in range(3):
        a.add("camera/0", (1000 + 20 * k) * MS, IMG)
        a.add("joints", (1000 + 20 * k) * MS, np.full(3, float(k), np.float32))
        if k < 2:
            assert a.assemble((1001 + 20 * k) * MS, build=False) is None
    out = a.assemble(1041 * MS)
    assert out is not None and out.obs.timestep == 2 and out.obs.state.tolist() == [2, 2, 2]
    assert a.assemble(1042 * MS) is None  # the unbuilt sets were used up too
