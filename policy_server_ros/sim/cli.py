"""`policy_server_sim`: closed-loop evaluation on the simulated ALOHA transfer-cube task, and
training of the state-based MLP that solves it.

    policy_server_sim eval --model examples/sim_transfer_cube/mlp --seeds 100-149
    policy_server_sim eval --model examples/sim_transfer_cube/demos.npz --seeds 0-19   # replay
    policy_server_sim eval --model examples/sim_transfer_cube/mlp --seeds 100-109 --via socket
    policy_server_sim train-mlp --seeds 0-99 --out examples/sim_transfer_cube/mlp
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from policy_server_ros.sim.demos import DEMOS, DemoError, load_demos, read_seeds
from policy_server_ros.sim.episodes import EPISODE_STEPS

log = logging.getLogger("policy_server_ros.sim")


def _image_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise argparse.ArgumentTypeError(f"image size must be HxW (e.g. 480x640), got {text!r}")
    return int(height), int(width)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policy_server_sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="run episodes with a served policy and report")
    ev.add_argument("--model", required=True,
                    help="checkpoint folder, or a demonstrations .npz (replay of each seed)")
    ev.add_argument("--seeds", default="100-149",
                    help="cube start seeds: 0-19, 3,5,7, or a file holding such a list")
    ev.add_argument("--episodes", type=int, default=0,
                    help="run only the first N seeds (0 = all)")
    ev.add_argument("--via", choices=("ros", "socket"), default="ros")
    ev.add_argument("--execution-mode", choices=("chunk", "ensemble", "aggregate"),
                    default="ensemble")
    ev.add_argument("--inference-rate", type=float, default=0.0,
                    help="Hz of sim time (ROS node's inference_rate); 0 = every observation")
    ev.add_argument("--max-steps", type=int, default=EPISODE_STEPS)
    ev.add_argument("--image-size", type=_image_size, default=None,
                    help="camera HxW (default 480x640 when the policy takes a camera)")
    ev.add_argument("--real-time-factor", type=float, default=1.0,
                    help="sim time per wall time to pace at; 0 = as fast as possible")
    ev.add_argument("--out", type=Path, default=Path("results/sim_eval"))
    ev.add_argument("--no-video", action="store_true")
    ev.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the loop")
    ev.add_argument("-p", dest="node_params", action="append", default=[],
                    metavar="NAME:=VALUE", help="extra parameter for the policy_server node")
    tr = sub.add_parser("train-mlp", help="train the state-based MLP on the demonstrations")
    tr.add_argument("--demos", type=Path, default=DEMOS)
    tr.add_argument("--seeds", default="0-99")
    tr.add_argument("--out", type=Path, default=Path("results/sim_mlp"))
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--chunk-size", type=int, default=20)
    tr.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser


def _eval(args: argparse.Namespace) -> int:
    from policy_server_ros.inputs import parse_overrides  # noqa: PLC0415
    from policy_server_ros.sim.evaluate import EvalConfig, evaluate  # noqa: PLC0415

    seeds = read_seeds(args.seeds)
    if args.episodes:
        seeds = seeds[:args.episodes]
    config = EvalConfig(
        model=args.model, seeds=seeds, via=args.via, out=args.out, max_steps=args.max_steps,
        image_hw=args.image_size, real_time_factor=args.real_time_factor,
        execution_mode=args.execution_mode, inference_rate=args.inference_rate,
        video=not args.no_video, domain_id=args.domain_id,
        node_params=parse_overrides(args.node_params),
        on_episode=lambda e: print(
            f"seed {e['seed']:4d}: {'SUCCESS' if e['success'] else 'failure'}  max reward "
            f"{e['max_reward']:.0f}  return {e['episode_return']:.0f}  steps {e['steps']}  "
            f"({e['wall_s']:.1f} s)", flush=True))
    report = evaluate(config)
    latency = report["inference_latency_ms"]
    print(f"success {report['successes']}/{report['episodes']} "
          f"({100 * report['success_rate']:.0f}%) via {report['via']}, mean return "
          f"{report['mean_return']:.1f}, loop {report['loop_rate_hz']:.1f} Hz (real-time factor "
          f"{report['real_time_factor']:.2f}), latency p50 "
          f"{latency['p50'] if latency['p50'] is None else round(latency['p50'], 1)} ms; "
          f"wrote {args.out / 'report.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from policy_server_ros.sim.train_mlp import TrainConfig, train  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    summary = train(load_demos(args.demos), read_seeds(args.seeds), args.out,
                    TrainConfig(epochs=args.epochs, chunk_size=args.chunk_size))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("losses", "train_seeds")}))
    print(f"wrote {args.out} ({summary['train_time_s']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from policy_server_ros.sim.evaluate import EvalError  # noqa: PLC0415
    from policy_server_ros.sim.processes import PolicyProcessError  # noqa: PLC0415
    from policy_server_ros.sim.transfer_cube import SimUnavailable  # noqa: PLC0415

    try:
        return _eval(args) if args.command == "eval" else _train(args)
    except (DemoError, EvalError, PolicyProcessError, SimUnavailable, ValueError) as exc:
        print(f"policy_server_sim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
