"""The request and reply formats of the socket protocol, in both directions.

Request: a pickled `benchmark.base.MetaObs`. Reply, for an unbatched request: a list of
`MetaAction`, one per timestep (the documented protocol). For a batched request: what ILStudio's
own clients read as `reply[t][b]['action']`, a list over timesteps of numpy object arrays of
shape (B,) holding one dict per batch item. On an inference error the reply is `[]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_server_ros.policies.base import PolicyOutput
from socket_bridge.portable_pickle import dumps
from socket_bridge.safe_unpickle import safe_loads
from socket_bridge.wire_types import MetaAction, MetaObs, protocol_class

__all__ = ["EMPTY_REPLY", "ProtocolError", "decode_reply", "decode_request", "reply_from_output"]

EMPTY_REPLY = dumps([])


class ProtocolError(ValueError):
    """A frame decoded safely but is not a request of this protocol."""


def decode_request(payload: bytes | bytearray | memoryview, alias: bool = False) -> MetaObs:
    """Safely unpickle one request frame. Raises UnsafePickleError, ProtocolError, or the
    unpickler's own errors for malformed bytes. `alias`: see safe_loads (camera images may be
    views of `payload`)."""
    obs = safe_loads(payload, alias=alias)
    if type(obs) is not MetaObs:
        raise ProtocolError(f"expected a pickled benchmark.base.MetaObs, got {type(obs).__name__}")
    return obs


def reply_from_output(output: PolicyOutput) -> list[Any]:
    """The wire reply for one engine result, in the form the request's shape calls for."""
    spec = output.spec
    actions = output.actions
    if not output.batched:
        action_class = protocol_class(MetaAction)
        return [action_class(ctrl_space=spec.ctrl_space, ctrl_type=spec.ctrl_type,
                           action=step, gripper_continuous=spec.gripper_continuous)
                for step in actions[0]]
    batch_size = actions.shape[0]
    reply = []
    for t in range(actions.shape[1]):
        entries = np.empty(batch_size, dtype=object)
        entries[:] = [{"ctrl_space": spec.ctrl_space, "ctrl_type": spec.ctrl_type,
                       "action": actions[b, t], "gripper_continuous": spec.gripper_continuous}
                      for b in range(batch_size)]
        reply.append(entries)
    return reply


def decode_reply(payload: bytes | bytearray | memoryview) -> list[Any]:
    """Safely unpickle a reply frame (the client's side)."""
    reply = safe_loads(payload)
    if not isinstance(reply, list):
        raise ProtocolError(f"expected a pickled list as reply, got {type(reply).__name__}")
    return reply
