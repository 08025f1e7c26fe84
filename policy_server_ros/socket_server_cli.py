"""`start_policy_server.py`: serve a policy over TCP, with the original guide's flags.

    python start_policy_server.py                       # the example ACT checkpoint, port 5000
    python start_policy_server.py -m ckpt/my_run/checkpoint-5000 --device cuda:0 --chunk_size 50
    python start_policy_server.py -m builtin:echo --config server.yaml --port 6000  # CLI wins

Runs without ROS: this module imports no rclpy.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from policy_server_ros.checkpoint import EXAMPLE_CHECKPOINT, CheckpointError, resolve_model
from policy_server_ros.engine import BackendUnavailable
from policy_server_ros.engine_backends import RayOptions, make_engine
from policy_server_ros.node_parameters import BY_NAME, DEVICE, ParamSpec
from policy_server_ros.normalization import DEFAULT_MIN_STD, NormalizationError
from policy_server_ros.policies import LoadOptions, PolicyLoadError
from policy_server_ros.policies.base import PRECISIONS
from socket_bridge import auth
from socket_bridge.framing import DEFAULT_MAX_FRAME_BYTES
from socket_bridge.server import PolicySocketServer, ServerConfig

log = logging.getLogger("policy_server_ros.cli")

DEFAULT_MODEL = str(EXAMPLE_CHECKPOINT)


def _number(kind: type, low: float, high: float, *, low_open: bool = False) -> Any:
    """An argparse type: `kind` in [low, high] ((low, high] with low_open); a one-line error
    naming the range otherwise (NaN fails every comparison, so it is refused too)."""
    what = "an integer" if kind is int else "a number"
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]" if kind is float \
        else f"[{int(low)}, {int(high)}]"

    def parse(text: Any) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not (low < value if low_open else low <= value) \
                or not value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be {what} in {interval}")
        return value

    return parse


def _image_size(text: Any) -> tuple[int, int]:
    height, _, width = str(text).partition("x")
    try:
        size = (int(height), int(width))
    except ValueError:
        size = (0, 0)
    if not all(1 <= side <= 8192 for side in size):
        raise argparse.ArgumentTypeError(f"{text!r} must be HxW with H, W in [1, 8192]")
    return size


def _pattern(rule: dict[str, str]) -> Any:
    """An argparse type: text matching rule["pattern"] (node_parameters' rules)."""

    def parse(text: Any) -> str:
        if not re.fullmatch(rule["pattern"], str(text)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {rule['allowed']}")
        return str(text)

    return parse


_device = _pattern(DEVICE)


def _add_from_table(group: Any, spec: ParamSpec) -> None:
    """`--<name>` for node parameter `spec` (node_parameters.py): its default, its check
    (choices, pattern or range) and its description."""
    kw: dict[str, Any] = {"default": spec.default,
                          "help": f"{spec.description} (default: %(default)s)"}
    if spec.choices:
        kw["choices"] = spec.choices
    elif spec.pattern:
        kw["type"] = _pattern({"pattern": spec.pattern, "allowed": spec.allowed})
    elif spec.min is not None:
        kw["type"] = _number(spec.kind, spec.min, spec.max)
    group.add_argument(f"--{spec.name}", **kw)


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="start_policy_server.py", allow_abbrev=False,
        description="Serve an imitation-learning policy over TCP: [4-byte big-endian length]"
                    "[pickle(MetaObs)] in, [length][pickle(list of MetaAction)] out.")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML file whose keys are the flag names below (e.g. port: 6000); "
                             "flags given on the command line win")
    parser.add_argument("--host", default=defaults.host,
                        help="address to bind (default: %(default)s)")
    parser.add_argument("--port", "-p", type=_number(int, 0, 65535), default=defaults.port,
                        help="TCP port (default: %(default)s)")
    parser.add_argument("--model_name_or_path", "-m", default=DEFAULT_MODEL,
                        help="checkpoint folder (ILStudio layout), or builtin:zero / "
                             "builtin:echo (default: %(default)s, an untrained example ACT "
                             "created on first use)")
    parser.add_argument("--dataset_id", default="",
                        help="dataset whose normalization to use; '' = the first (default)")
    parser.add_argument("--chunk_size", type=_number(int, 0, 100000), default=0,
                        help="actions per reply; 0 = the policy's whole chunk (default)")
    parser.add_argument("--device", default="cuda", type=_device,
                        help="cuda, cuda:N or cpu; cuda without a GPU falls back to the CPU "
                             "with a warning (default: cuda)")
    runtime = parser.add_argument_group("inference")
    runtime.add_argument("--precision", default="fp32", choices=PRECISIONS,
                         help="autocast precision (default: fp32)")
    runtime.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                         help="torch.compile the model (slow first request; default: off)")
    runtime.add_argument("--min_std",
                         type=_number(float, 0, 1, low_open=True), default=DEFAULT_MIN_STD,
                         help="zscore's smallest std; ILStudio used 0.01 before mid-November "
                              "2025 (default: %(default)s)")
    family = parser.add_argument_group("policy families")
    family.add_argument("--seed", type=_number(int, 0, 2**31 - 1), default=None,
                        help="diffusion_policy: seed of the initial noise, set before every "
                             "inference (reproducible actions; default: fresh noise each call)")
    family.add_argument("--num_inference_steps", type=_number(int, 0, 10000), default=0,
                        help="Diffusion Policy denoising steps; 0 = the checkpoint's own "
                             "(ILStudio: 10, as its loader; LeRobot: config.json's "
                             "num_inference_steps, else all training timesteps; default: 0)")
    family.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=False,
                        help="diffusion_policy: serve ema_model.bin's EMA weights (default: off)")
    family.add_argument("--replay_episode", type=_number(int, 0, 1_000_000), default=0,
                        help="replay: which episode_<n> of actions.npz to serve (default: 0)")
    family.add_argument("--lerobot_image_features", nargs="+", default=(), metavar="FEATURE",
                        help="LeRobot checkpoints: the image feature each MetaObs.image camera "
                             "feeds, in camera order (default: config.json's image features "
                             "in their order)")
    family.add_argument("--lerobot_ctrl_space", choices=("joint", "ee"), default="joint",
                        help="LeRobot checkpoints: the actions' ctrl_space, which LeRobot does "
                             "not record (default: joint)")
    family.add_argument("--lerobot_ctrl_type", choices=("abs", "delta", "rel"), default="abs",
                        help="LeRobot checkpoints: the actions' ctrl_type (default: abs)")
    runtime.add_argument("--max_batch", type=_number(int, 1, 1024), default=8,
                         help="most observations per forward pass; 1 disables batching "
                              "(default: %(default)s)")
    runtime.add_argument("--max_wait_ms", type=_number(float, 0, 10000), default=0.0,
                         help="how long a batch waits for more requests; 0 batches only what "
                              "is already queued, and lets a request that finds the engine "
                              "idle run on its connection's thread (default: %(default)s)")
    runtime.add_argument("--warmup_image_size", type=_image_size, default=(480, 640),
                         metavar="HxW", help="image size of the warm-up pass (default: 480x640)")
    backend = parser.add_argument_group("where the policy runs (the ray backend needs the [ray] "
                                        "extra)")
    # The same knobs as the node's parameters, from its table: names, defaults, ranges, help.
    for name in ("backend", "ray_address", "ray_app", "replicas", "min_replicas",
                 "max_replicas", "replica_gpus", "replica_cpus", "ray_connect_timeout"):
        _add_from_table(backend, BY_NAME[name])
    limits = parser.add_argument_group("limits (a client can never exceed these)")
    limits.add_argument("--max_frame_bytes",
                        type=_number(int, 1024, 2**31 - 1), default=DEFAULT_MAX_FRAME_BYTES,
                        help="largest request frame accepted (default: %(default)s)")
    limits.add_argument("--max_connections",
                        type=_number(int, 1, 4096), default=defaults.max_connections,
                        help="simultaneous clients; more are refused (default: %(default)s)")
    limits.add_argument("--frame_timeout",
                        type=_number(float, 0, 3600, low_open=True), default=defaults.frame_timeout,
                        help="seconds for a started frame to arrive whole (default: %(default)s)")
    limits.add_argument("--idle_timeout",
                        type=_number(float, 0, 86400), default=defaults.idle_timeout,
                        help="seconds a client may stay silent between requests; 0 = forever "
                             "(default: %(default)s)")
    limits.add_argument("--send_timeout",
                        type=_number(float, 0, 3600, low_open=True), default=defaults.send_timeout,
                        help="seconds a client may take to read its reply (default: %(default)s)")
    limits.add_argument("--inference_timeout",
                        type=_number(float, 0, 3600, low_open=True),
                        default=defaults.inference_timeout,
                        help="seconds to wait for the policy before replying [] "
                             "(default: %(default)s)")
    limits.add_argument("--auth_token_file", metavar="FILE",
                        help=f"require clients to authenticate with the token in FILE (the "
                             f"token itself never goes on the command line; "
                             f"{auth.ENV_VAR} works too); default: no authentication")
    parser.add_argument("--log_level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: INFO)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse flags; values from --config FILE become defaults that the command line overrides."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        parser.set_defaults(**_read_config(parser, args.config))
        args = parser.parse_args(argv)
    return args


def _read_config(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        parser.error(f"cannot read --config {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        parser.error(f"--config {path} is not valid YAML: {exc}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        parser.error(f"--config {path} must hold a mapping of flag names to values")
    known = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    unknown = sorted(set(data) - set(known))
    if unknown:
        parser.error(f"--config {path}: unknown keys {unknown}; valid keys: {sorted(known)}")
    values = {}
    for key, value in data.items():
        action = known[key]
        try:  # same conversion and choices as on the command line
            converted = action.type(value) if action.type and value is not None else value
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"--config {path}: {key}: {exc or f'invalid value {value!r}'}")
        if action.choices and converted not in action.choices:
            parser.error(f"--config {path}: {key}: {converted!r} is not one of {action.choices}")
        values[key] = converted
    return values


def server_config_from(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(host=args.host, port=args.port, max_frame_bytes=args.max_frame_bytes,
                        frame_timeout=args.frame_timeout, idle_timeout=args.idle_timeout,
                        send_timeout=args.send_timeout, inference_timeout=args.inference_timeout,
                        max_connections=args.max_connections,
                        auth_token=auth.load_token(args.auth_token_file))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        config = server_config_from(args)
        if args.model_name_or_path == DEFAULT_MODEL:
            args.model_name_or_path = resolve_model(DEFAULT_MODEL)
            log.warning("Serving the example checkpoint: its weights are untrained; its actions "
                        "are not meant for a real robot. Pass -m to serve your own.")
        options = LoadOptions(device=args.device, dataset_id=args.dataset_id,
                              min_std=args.min_std, precision=args.precision,
                              compile=args.compile, warmup_image_hw=args.warmup_image_size,
                              seed=args.seed, num_inference_steps=args.num_inference_steps,
                              use_ema=args.use_ema, replay_episode=args.replay_episode,
                              lerobot_image_features=tuple(args.lerobot_image_features),
                              lerobot_ctrl_space=args.lerobot_ctrl_space,
                              lerobot_ctrl_type=args.lerobot_ctrl_type)
        engine = make_engine(args.backend, args.model_name_or_path, options,
                             chunk_size=args.chunk_size, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms,
                             ray=RayOptions.from_settings(vars(args), args.inference_timeout))
    except (PolicyLoadError, CheckpointError, NormalizationError, ValueError,
            FileNotFoundError, BackendUnavailable) as exc:  # auth.AuthError is a ValueError
        log.error("%s", exc)
        return 2
    engine.wait_ready()
    server = PolicySocketServer(engine, config)
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s received; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server.start()
    except OSError as exc:
        log.error("%s", exc)
        engine.close()
        return 1
    spec = engine.policy.spec
    log.info("Serving %s (chunk of %d actions, ctrl_space=%s, ctrl_type=%s); ready %.1f s "
             "after start (backend %s); Ctrl+C to stop", args.model_name_or_path,
             engine.chunk_size, spec.ctrl_space, spec.ctrl_type, time.perf_counter() - started,
             args.backend)
    while not stop.wait(0.5):  # wake up regularly so signals are handled promptly
        pass
    server.stop()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
