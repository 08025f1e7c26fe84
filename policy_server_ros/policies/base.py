"""What a policy is to the rest of the server: batched numpy in, an action chunk array out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_server_ros.normalization import DEFAULT_MIN_STD
from socket_bridge.wire_types import MetaObs

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ActionSpec:
    """How to read a policy's actions; carried on every MetaAction and ActionChunk message.

    chunk_size is how many actions the policy produces per observation.
    """

    action_dim: int
    chunk_size: int
    ctrl_space: str = "ee"
    ctrl_type: str = "delta"
    gripper_continuous: bool = False

    def __post_init__(self) -> None:
        if self.action_dim < 1 or self.chunk_size < 1:
            raise ValueError(f"action_dim and chunk_size must be >= 1, got {self}")


@dataclass(frozen=True)
class LoadOptions:
    """How to load and run a checkpoint policy (the server's command-line choices)."""

    device: str = "cuda"
    dataset_id: str = ""
    min_std: float = DEFAULT_MIN_STD
    precision: str = "fp32"
    compile: bool = False
    warmup_image_hw: tuple[int, int] = (480, 640)
    # Diffusion Policy: the initial noise's seed (None: fresh noise every call), denoising steps
    # (0: the checkpoint's own, ILStudio's loader's 10 or LeRobot's config.json), and whether
    # to serve ema_model.bin's weights.
    seed: int | None = None
    num_inference_steps: int = 0
    use_ema: bool = False
    # replay: which recorded episode to serve.
    replay_episode: int = 0
    # LeRobot checkpoints: the image feature each camera feeds, in camera order (empty:
    # config.json's order), and the actions' convention, which LeRobot does not record.
    lerobot_image_features: tuple[str, ...] = ()
    lerobot_ctrl_space: str = "joint"
    lerobot_ctrl_type: str = "abs"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.min_std > 0:
            raise ValueError(f"min_std must be > 0, got {self.min_std}")
        if self.num_inference_steps < 0:
            raise ValueError(f"num_inference_steps must be >= 0, got {self.num_inference_steps}")
        if self.replay_episode < 0:
            raise ValueError(f"replay_episode must be >= 0, got {self.replay_episode}")


class Policy(ABC):
    """A policy the inference engine can run.

    The engine calls `preprocess`, `forward` and `postprocess` in turn (timing each) on a batched
    MetaObs (state (B, D) float32, image (B, K, C, H, W) uint8, ...); `postprocess` returns
    actions of shape (B, spec.chunk_size, spec.action_dim). The engine never makes two calls at
    once, so implementations need no locking.
    """

    spec: ActionSpec
    # Actions per reply when the command line does not say (None: the whole chunk).
    default_reply_steps: int | None = None
    # Cameras the policy was trained with, in order (None: it takes any number, or none).
    camera_names: tuple[str, ...] | None = None
    # Seconds between consecutive actions when the checkpoint says (replay's period), else None.
    action_period: float | None = None
    # (name, size) of the state vector the policy reads, when it says (checked at start-up).
    state_feature: tuple[str, int] | None = None

    @property
    def worker_thread_only(self) -> bool:
        """Whether only the engine's worker thread may run this policy. A policy on a torch
        accelerator (its `device` not the CPU) stays there: its cuBLAS/cuDNN handles, streams and
        warm-up belong to that thread. Others may also run on the thread of a request that
        finds the engine idle (InferenceEngine.run_here), never two calls at once."""
        device = getattr(self, "device", None)
        return getattr(device, "type", "cpu") != "cpu"

    def preprocess(self, batch: MetaObs) -> Any:
        return batch

    @abstractmethod
    def forward(self, inputs: Any) -> Any: ...

    def postprocess(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs, dtype=np.float32)

    def predict(self, batch: MetaObs) -> np.ndarray:
        return self.postprocess(self.forward(self.preprocess(batch)))

    def example_observation(self) -> MetaObs | None:
        """An unbatched observation for the engine's warm-up pass; None skips warm-up."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most policies hold nothing to release
        """Release devices or files; called once when the engine shuts down."""


@dataclass
class PolicyOutput:
    """The engine's answer to one request.

    actions: (B, T, A) float32 with T already limited to the requested chunk size;
    batched: whether the request was batched (decides the socket reply form);
    timings_ms: queue, preprocess, forward, postprocess (the batch's), and batch_size.
    """

    actions: np.ndarray
    batched: bool
    spec: ActionSpec
    timings_ms: dict[str, float] = field(default_factory=dict)
