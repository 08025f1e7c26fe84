"""`policy_server_bag`: replay, record, eval and make-sample (see README, "Rosbags").

    policy_server_bag make-sample results/sample_bag
    policy_server_bag replay results/sample_bag --restamp --monitor /policy_server/action_chunk
    policy_server_bag record out_bag --topics /joint_states /policy_server/action_chunk
    policy_server_bag eval results/sample_bag -m builtin:echo --action-topic /joint_commands

Exit codes: 0 done (Ctrl+C included), 2 bad arguments or an unreadable bag, 1 anything else.
"""

# Each subcommand imports its module when it runs: eval needs torch, replay and record rclpy,
# and loading all of them would add seconds to every command.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from policy_server_ros.bag_tools.storage import STORAGES, BagError
from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.inputs import ParameterError, node_params
from policy_server_ros.normalization import NormalizationError
from policy_server_ros.policies import PolicyLoadError

# Errors that mean "the input is wrong", reported in one line with exit code 2.
USER_ERRORS = (BagError, ParameterError, PolicyLoadError, CheckpointError, NormalizationError,
               ValueError, OSError)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def say(text: str) -> None:
    """Print a line at once, also when stdout is a pipe (tee, a launch file, a test)."""
    print(text, flush=True)


def _topic(name: str) -> str:
    return name if name.startswith("/") else "/" + name


def _cmd_make_sample(args: argparse.Namespace) -> int:
    from policy_server_ros.bag_tools.sample import SampleSpec, make_sample

    spec = SampleSpec(seconds=args.seconds, camera_hz=args.camera_hz, height=args.height,
                      width=args.width)
    counts = make_sample(args.out, spec, storage=args.storage)
    print(f"wrote {args.out} ({args.storage}, {spec.seconds:g} s, "
          f"{sum(counts.values())} messages)")
    for topic, count in counts.items():
        print(f"  {topic}: {count}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from policy_server_ros.bag_tools.replay import ReplayOptions, replay

    topics = [_topic(t) for t in args.topics or []] or None
    options = ReplayOptions(rate=args.rate, topics=topics,
                            loop=args.loop, start=args.start, duration=args.duration,
                            restamp=args.restamp, delay=args.delay,
                            wait_subscribers=args.wait_subscribers,
                            monitor=_topic(args.monitor) if args.monitor else None)
    summary = replay(args.bag, options, _stop_on_signals(), report=say)
    say("\n".join(summary.lines()))
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from policy_server_ros.bag_tools.record import record

    summary = record(args.out, [_topic(t) for t in args.topics], _stop_on_signals(),
                     storage=args.storage, duration=args.duration, report=say)
    say("\n".join(summary.lines()))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from policy_server_ros.bag_tools.evaluate import evaluate

    params = node_params(args.params_file, args.param,
                         model_name_or_path=args.model_name_or_path, device=args.device,
                         chunk_size=args.chunk_size)
    ev = evaluate(args.bag, params, action_topic=_topic(args.action_topic),
                  horizons=args.horizons.split(","), stride=args.stride,
                  max_observations=args.max_observations,
                  match_tolerance=args.match_tolerance, progress=not args.quiet)
    out = args.out or Path("results") / f"eval_{Path(args.bag).resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json"]
    if not args.no_plots:
        from policy_server_ros.bag_tools.plots import plot_actions, plot_error_by_step

        files += [plot_actions(ev, out / "actions.png"),
                  plot_error_by_step(ev, out / "error_by_step.png")]
    ev.report["files"] = [str(f) for f in files]
    files[0].write_text(json.dumps(ev.report, indent=2) + "\n")
    r = ev.report
    print(f"{r['model_name_or_path']} on {r['bag']}: {r['observations_evaluated']} chunks "
          f"({r['chunk_size']}x{r['action_dim']}) scored against {r['action_topic']}")
    print("horizon  steps scored   MAE (mean over dims)  RMSE (mean over dims)")
    for horizon, m in r["horizons"].items():
        print(f"{horizon:>7}  {m['steps_scored']:>12}  {m['mae_mean']:>20.6f}  "
              f"{m['rmse_mean']:>21.6f}")
    print("wrote " + ", ".join(r["files"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policy_server_bag", description="Replay, record and evaluate rosbags (rosbag2: "
        "MCAP or sqlite3) for the policy server.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="publish a bag with its recorded timing")
    p.add_argument("bag", type=Path)
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--topics", nargs="+", help="only these topics (default: all)")
    p.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl+C")
    p.add_argument("--start", type=float, default=0.0, help="skip this many seconds of the bag")
    p.add_argument("--duration", type=float, help="play only this many seconds of the bag")
    p.add_argument("--restamp", action="store_true",
                   help="rewrite header stamps to the replay time (needed for the node's "
                        "max_observation_age check)")
    p.add_argument("--wait-subscribers", type=float, default=5.0, metavar="SECONDS",
                   help="wait up to this long for subscribers to match before the first "
                        "message (default 5; 0 = start at once)")
    p.add_argument("--delay", type=float, default=0.0,
                   help="seconds to wait before the first message, after that (default 0)")
    p.add_argument("--monitor", metavar="TOPIC",
                   help="report chunk rate and latency of an ActionChunk topic, e.g. "
                        "/policy_server/action_chunk")
    p.set_defaults(run=_cmd_replay)

    p = sub.add_parser("record", help="record live topics to a new bag until Ctrl+C")
    p.add_argument("out", type=Path, help="new bag directory")
    p.add_argument("--topics", nargs="+", required=True)
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(run=_cmd_record)

    p = sub.add_parser("eval", help="score a policy open-loop against a bag's commanded actions")
    p.add_argument("bag", type=Path)
    p.add_argument("--model_name_or_path", "-m",
                   help="checkpoint or builtin:NAME (default: the node's default)")
    p.add_argument("--action-topic", default="/joint_commands",
                   help="commanded actions: JointState, JointTrajectory, Float32/64MultiArray "
                        "or PoseStamped (default /joint_commands)")
    p.add_argument("--params-file", type=Path,
                   help="the node's params YAML (topics, joint_names, sync_slop, ...)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="a node parameter, as with --ros-args -p (repeatable)")
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: the node's, cuda)")
    p.add_argument("--chunk_size", type=int, help="actions per chunk (default: the node's)")
    p.add_argument("--horizons", default="1,10,full",
                   help="steps over which to score, comma-separated (default 1,10,full)")
    p.add_argument("--stride", type=int, default=1, help="evaluate every N-th observation")
    p.add_argument("--max-observations", type=int, default=0, help="stop after N (0 = all)")
    p.add_argument("--match-tolerance", type=float,
                   help="largest gap (s) between a chunk step's time and the command it is "
                        "compared with (default: half of action_period)")
    p.add_argument("--out", type=Path, help="report folder (default results/eval_<bag name>)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_eval)

    p = sub.add_parser("make-sample", help="write a small synthetic robot bag")
    p.add_argument("out", type=Path, help="new bag directory")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--camera-hz", type=float, default=25.0)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--width", type=int, default=160)
    p.set_defaults(run=_cmd_make_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        print(f"policy_server_bag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
