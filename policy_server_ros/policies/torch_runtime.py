"""What every torch policy needs: the device, precision, compilation and strict weight loading."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

log = logging.getLogger("policy_server_ros.policies")

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class WeightsMismatchError(ValueError):
    """model.safetensors does not fit the model config.json describes; names the tensors."""


def resolve_device(requested: str) -> torch.device:
    """`cuda`, `cuda:N` or `cpu`. CUDA asked for but absent: a warning, then the CPU, so the
    guide's default (`--device cuda`) still starts on a laptop."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", requested):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log.warning("--device %s requested but CUDA is not available; running on the CPU",
                    requested)
        return torch.device("cpu")
    device = torch.device(requested)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {requested}: only {torch.cuda.device_count()} CUDA "
                         f"device(s) present")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on `device`, or nothing for fp32."""
    dtype = _DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _names(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights_strict(module: torch.nn.Module, path: Path, *, prefix: str = "",
                        ignore: re.Pattern[str] | None = None) -> None:
    """Load a safetensors file into `module`, every tensor accounted for.

    Keys must carry `prefix` (removed before matching); keys matching `ignore` (after removing
    the prefix) are weights the module deliberately does not build. Anything missing,
    unexpected or of the wrong shape raises WeightsMismatchError naming the tensors.
    """
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsMismatchError(f"cannot read {path}: {exc}") from exc
    unprefixed = [k for k in tensors if not k.startswith(prefix)]
    if unprefixed:
        raise WeightsMismatchError(f"{path}: tensors without the '{prefix}' prefix: "
                                   f"{_names(unprefixed)}")
    state = {k[len(prefix):]: v for k, v in tensors.items()}
    if ignore is not None:
        state = {k: v for k, v in state.items() if not ignore.match(k)}
    load_state_strict(module, state, path)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor],
                      path: Path) -> None:
    """Load `state` (read from `path`) into `module`: every tensor accounted for, or a
    WeightsMismatchError naming the missing, unexpected and wrongly shaped ones."""
    expected = module.state_dict()
    problems = []
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} (config expects {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if wrong:
        problems.append(f"wrong shapes: {_names(wrong)}")
    if problems:
        raise WeightsMismatchError(f"{path} does not fit config.json: " + "; ".join(problems)
                                   + ". Is config.json from the same training run?")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
