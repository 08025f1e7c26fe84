"""Example MLP checkpoints, written as ILStudio writes them (transformers' save_pretrained):
config.json with MLPPolicyConfig's keys, model.safetensors with `mlp.<index>.*` tensors, plus the
training files (policy_metadata.json, normalize.json, statistics).

Sizes: ALOHA's 14-D state and action, 3 layers of 256 (ReLU, dropout 0.1 as ILStudio's
configs/policy/mlp.yaml), chunk 20; `small`: 2 layers of 32, chunk 10. With cameras, the images
(K x 3 x H x W) are flattened into the input, as the original's camera variant does. Untrained,
seeded weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# config.json keys transformers writes that inference does not use, kept for fidelity.
ILSTUDIO_EXTRA = {"architectures": ["MLPPolicy"], "torch_dtype": "float32",
                  "transformers_version": "4.45.2"}


def example_config(small: bool = False, cameras: int = 0,
                   image_hw: tuple[int, int] = (480, 640)) -> Any:
    from policy_server_ros.policies.mlp.model import MLPConfig  # noqa: PLC0415

    image_dim = cameras * 3 * image_hw[0] * image_hw[1] if cameras else None
    sizes = {"num_layers": 2, "hidden_dim": 32, "chunk_size": 10} if small else \
        {"num_layers": 3, "hidden_dim": 256, "chunk_size": 20}
    return MLPConfig(state_dim=14, action_dim=14, activation="relu", dropout=0.1,
                     use_camera=bool(cameras), image_dim=image_dim, **sizes,
                     extra=dict(ILSTUDIO_EXTRA))


def write_example(out: str | Path, *, small: bool = False, cameras: int = 0,
                  image_hw: tuple[int, int] = (480, 640), seed: int = 0, config: Any = None,
                  **_unused: Any) -> Path:
    """Write the checkpoint folder `out` (created if needed) and return it."""
    import torch  # noqa: PLC0415 - only writing examples needs torch here
    from safetensors.torch import save_file  # noqa: PLC0415

    from policy_server_ros.checkpoint import CONFIG, WEIGHTS  # noqa: PLC0415
    from policy_server_ros.example_checkpoint import write_training_files  # noqa: PLC0415
    from policy_server_ros.policies.mlp.model import MLPNetwork  # noqa: PLC0415

    config = config or example_config(small, cameras, image_hw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    state = MLPNetwork(config).state_dict()
    generator = torch.Generator().manual_seed(seed + 1)
    for name, tensor in state.items():  # biases away from zero, so they matter in tests
        if name.endswith("bias"):
            state[name] = 0.05 * torch.randn(tensor.shape, generator=generator)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS),
              metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    write_training_files(out, "mlp", config.state_dim, config.action_dim)
    return out
