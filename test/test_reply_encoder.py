"""The template reply encoder gives exactly the bytes of the reference pickler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from benchmark.base import MetaAction
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from socket_bridge import reply_encoder
from socket_bridge.portable_pickle import dumps
from socket_bridge.protocol import reply_from_output
from socket_bridge.reply_encoder import ReplyEncoder

SPECS = [ActionSpec(action_dim=14, chunk_size=100),
         ActionSpec(action_dim=1, chunk_size=3, ctrl_space="joint", ctrl_type="abs",
                    gripper_continuous=True)]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(("batched", "batch"), [(False, 1), (True, 1), (True, 5)])
def test_template_bytes_equal_the_reference_pickle(spec, batched, batch) -> None:
    encoder = ReplyEncoder()
    rng = np.random.default_rng(1)
    for _ in range(3):  # first call builds the template, the others use it
        actions = rng.standard_normal((batch, spec.chunk_size, spec.action_dim)).astype(np.float32)
        actions[0, 0, 0] = np.nan
        output = PolicyOutput(actions=actions, batched=batched, spec=spec)
        assert bytes(encoder.encode(output)) == dumps(reply_from_output(output))


def test_non_contiguous_actions_are_encoded_by_value() -> None:
    full = np.arange(2 * 10 * 4, dtype=np.float32).reshape(2, 10, 4)
    output = PolicyOutput(actions=full[:, :5], batched=True, spec=ActionSpec(4, 10))
    reply = pickle.loads(ReplyEncoder().encode(output))
    np.testing.assert_array_equal(reply[4][1]["action"], full[1, 4])


def test_huge_replies_fall_back_to_the_pickler(monkeypatch) -> None:
    monkeypatch.setattr(reply_encoder, "MAX_TEMPLATE_ROWS", 10)
    encoder = ReplyEncoder()
    output = PolicyOutput(actions=np.ones((1, 20, 2), np.float32), batched=False,
                          spec=ActionSpec(2, 20))
    reply = pickle.loads(encoder.encode(output))
    assert len(reply) == 20 and isinstance(reply[0], MetaAction)
    assert encoder._templates == {(False, (1, 20, 2), output.spec): None}


def test_a_hundred_step_reply_is_patched_in_a_few_runs() -> None:
    encoder = ReplyEncoder()
    output = PolicyOutput(actions=np.ones((1, 100, 14), np.float32), batched=True,
                          spec=SPECS[0])
    encoder.encode(output)
    _, runs = encoder._templates[(True, (1, 100, 14), SPECS[0])]
    assert len(runs) <= 3 and sum(count for *_, count in runs) == 100
