"""What a policy is to the rest of the server: batched numpy in, an action chunk array out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from benchmark.base import MetaObs


@dataclass(frozen=True)
class ActionSpec:
    """How to read a policy's actions; carried on every MetaAction and ActionChunk message."""

    action_dim: int
    chunk_size: int
    ctrl_space: str = "ee"
    ctrl_type: str = "delta"
    gripper_continuous: bool = False

    def __post_init__(self) -> None:
        if self.action_dim < 1 or self.chunk_size < 1:
            raise ValueError(f"action_dim and chunk_size must be >= 1, got {self}")


class Policy(ABC):
    """A policy the inference engine can run.

    `predict` receives a batched MetaObs (state (B, D) float32, image (B, K, C, H, W) uint8, ...)
    and returns actions of shape (B, spec.chunk_size, spec.action_dim). It is only ever called
    from the engine's worker thread, so implementations need no locking.
    """

    spec: ActionSpec

    @abstractmethod
    def predict(self, batch: MetaObs) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most policies hold nothing to release
        """Release devices or files; called once when the engine shuts down."""


@dataclass
class PolicyOutput:
    """The engine's answer to one request.

    actions: (B, T, A) float32 with T already limited to the requested chunk size;
    batched: whether the request was batched (decides the socket reply form).
    """

    actions: np.ndarray
    batched: bool
    spec: ActionSpec
    timings_ms: dict[str, float] = field(default_factory=dict)
