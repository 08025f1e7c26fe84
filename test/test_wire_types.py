"""benchmark.base: the guide's fields, defaults and behaviours of MetaObs and MetaAction."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from benchmark.base import MetaAction, MetaObs


def test_meta_obs_fields_and_defaults_match_the_guide() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(MetaObs)}
    assert list(fields) == ["state", "state_ee", "state_joint", "state_obj", "image", "depth",
                            "pc", "raw_lang", "timestep"]
    assert fields["raw_lang"] == "" and fields["timestep"] == -1
    assert all(fields[k] is None for k in list(fields)[:7])


def test_meta_action_fields_and_defaults_match_the_guide() -> None:
    action = MetaAction()
    assert (action.ctrl_space, action.ctrl_type, action.action, action.gripper_continuous) == \
        ("ee", "delta", None, False)
    assert [f.name for f in dataclasses.fields(MetaAction)] == \
        ["ctrl_space", "ctrl_type", "action", "gripper_continuous"]


def test_item_access_by_field_name() -> None:
    obs = MetaObs(state=np.ones(3), raw_lang="go")
    assert obs["raw_lang"] == "go" and obs["state"] is obs.state
    obs["timestep"] = 4
    assert obs.timestep == 4
    with pytest.raises(KeyError):
        obs["nope"]


@pytest.mark.parametrize(("action", "length"), [
    (None, 0), (np.zeros(14), 1), (np.zeros((100, 14)), 100), (np.zeros((1, 7)), 1)])
def test_meta_action_len(action: np.ndarray | None, length: int) -> None:
    assert len(MetaAction(action=action)) == length


def test_to_batch_adds_a_leading_axis_to_arrays_only() -> None:
    obs = MetaObs(state=np.zeros(14), image=np.zeros((2, 3, 4, 5), np.uint8), raw_lang="x",
                  timestep=3)
    batch = obs.to_batch()
    assert batch.state.shape == (1, 14) and batch.image.shape == (1, 2, 3, 4, 5)
    assert batch.depth is None and batch.raw_lang == "x" and batch.timestep == 3
    assert obs.state.shape == (14,)  # the original is untouched
    assert MetaAction(action=np.zeros(14)).to_batch().action.shape == (1, 14)


def test_unpickling_an_older_instance_falls_back_to_class_defaults() -> None:
    obs = MetaObs(state=np.ones(2))
    del obs.__dict__["timestep"], obs.__dict__["raw_lang"]  # as an older client's pickle
    restored = pickle.loads(pickle.dumps(obs))
    assert restored.timestep == -1 and restored.raw_lang == ""
