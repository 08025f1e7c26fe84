"""The node's parameters: names, defaults, descriptions and ranges, in one table.

node.py declares them from this table (with descriptors), config/server.yaml lists them, and the
launch file offers the important ones as launch arguments; tests check the three agree.
No rclpy here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policy_server_ros.checkpoint import EXAMPLE_CHECKPOINT
from policy_server_ros.chunk_scheduler import AGGREGATE_FUNCTIONS, MODES


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    # Python type of the value; needed for empty lists, whose element type cannot be inferred.
    kind: type = str
    # Text values (or list items) must fullmatch `pattern`; `allowed` says so in words.
    pattern: str = ""
    allowed: str = ""
    # A ROS topic name (or a list of them); "" (none) is allowed for a single topic.
    topic: bool = False

    @property
    def is_list(self) -> bool:
        return self.kind is list


def _p(name: str, default: Any, description: str, **kw: Any) -> ParamSpec:
    kind = kw.pop("kind", type(default))
    return ParamSpec(name, default, description, kind=kind, **kw)


QOS_CHOICES = ("sensor_data", "reliable", "latched")
DEVICE = {"pattern": r"cpu|cuda(:\d+)?", "allowed": "cpu, cuda or cuda:N"}
# A number given as a list item (list parameters are checked item by item as text).
NUMBER = {"pattern": r"[-+]?((\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|inf)", "allowed": "numbers"}
# A ROS 2 topic name: tokens of letters, digits and _ (not starting with a digit) joined by /,
# absolute (/), relative, or private (~/); `ros2 topic` and rcl refuse anything else.
# ray_address: `local` starts a cluster in this process, `auto` finds the one running on this
# machine, else host:port of a cluster's head (GCS), optionally with a ray:// scheme.
RAY_ADDRESS = {"pattern": r"local|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+",
               "allowed": "local, auto or host:port"}
TOPIC_PATTERN = r"(/|~/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*|~"

NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    # The policy.
    _p("model_name_or_path", str(EXAMPLE_CHECKPOINT),
       "checkpoint folder (ILStudio's or LeRobot's layout) or builtin:zero / builtin:echo; the "
       "default names "
       "the untrained example checkpoint: ./ckpt/... if present, else written once to "
       "~/.cache/policy_server_ros ($POLICY_SERVER_ROS_CACHE)"),
    _p("dataset_id", "", "dataset of normalize.json to use; empty = the first"),
    _p("chunk_size", 0, "actions per chunk; 0 = config.json's chunk_size (else the whole chunk)",
       min=0, max=100000),
    _p("device", "cuda", "cuda, cuda:N or cpu; cuda without a GPU falls back to the CPU",
       **DEVICE),
    _p("precision", "fp32", "autocast precision", choices=("fp32", "bf16", "fp16")),
    _p("compile", False, "torch.compile the model (slow start)"),
    _p("min_std", 1e-6, "zscore's smallest std (0.01 for checkpoints trained before Nov 2025)",
       min=1e-12, max=1.0),
    _p("seed", -1, "diffusion_policy: seed of the initial noise, set before every inference "
       "(reproducible actions); -1 = fresh noise each call", min=-1, max=2**31 - 1),
    _p("num_inference_steps", 0, "Diffusion Policy denoising steps; 0 = the checkpoint's own "
       "(ILStudio: 10, as its loader; LeRobot: config.json's num_inference_steps, else all "
       "num_train_timesteps)", min=0, max=10000),
    _p("use_ema", False, "diffusion_policy: serve the EMA weights of ema_model.bin (ILStudio's "
       "using_ema)"),
    _p("replay_episode", 0, "replay: which episode_<n> of actions.npz to serve", min=0,
       max=1000000),
    _p("lerobot_image_features", [], "LeRobot checkpoints: the image feature each of "
       "camera_topics feeds, in the same order (e.g. [observation.images.wrist, "
       "observation.images.top]); empty = config.json's image features in their order",
       kind=list),
    _p("lerobot_ctrl_space", "joint", "LeRobot checkpoints: ctrl_space of the actions (LeRobot "
       "does not record it)", choices=("joint", "ee")),
    _p("lerobot_ctrl_type", "abs", "LeRobot checkpoints: ctrl_type of the actions (LeRobot "
       "does not record it)", choices=("abs", "delta", "rel")),
    _p("max_batch", 8, "most observations per forward pass (ROS and socket requests together)",
       min=1, max=1024),
    _p("max_wait_ms", 0.0, "how long a batch waits for more requests (ms); 0 batches only what "
       "is already queued, and lets a socket request that finds the engine idle run on its "
       "connection's thread", min=0.0, max=10000.0),
    # Where the policy runs (engine_backends.py).
    _p("backend", "local", "inference engine: local (this process) or ray (a Ray Serve "
       "deployment; needs the [ray] extra)", choices=("local", "ray")),
    _p("ray_address", "local", "ray: local (start a cluster in this process), auto (the "
       "cluster running on this machine) or host:port of a cluster's head",
       **RAY_ADDRESS),
    _p("ray_app", "policy_server", "ray: Serve application name; a running one serving the same "
       "model is shared, else it is deployed", pattern=r"[A-Za-z0-9_\-]+",
       allowed="letters, digits, _ or -"),
    _p("replicas", 1, "ray: replicas of the model (each loads it on its own device)", min=1,
       max=1024),
    _p("min_replicas", 0, "ray: autoscaling lower bound (used when max_replicas > 0)", min=0,
       max=1024),
    _p("max_replicas", 0, "ray: autoscaling upper bound; 0 = a fixed number of replicas", min=0,
       max=1024),
    _p("replica_gpus", 0.0, "ray: GPUs per replica (a fraction shares one); 0 on CPU", min=0.0,
       max=64.0),
    _p("replica_cpus", 1.0, "ray: CPUs per replica", min=0.0, max=1024.0),
    _p("ray_connect_timeout", 30.0, "ray: seconds to keep retrying an unreachable cluster at "
       "start-up", min=0.1, max=3600.0),
    # Inputs.
    # Input topic defaults are relative, so they follow the node's namespace (robot1/...).
    _p("camera_topics", ["camera/color/image_raw"],
       "one sensor_msgs/Image topic per model camera, in the model's camera order; a topic "
       "ending in /compressed is read as sensor_msgs/CompressedImage (jpeg or png)", kind=list,
       topic=True),
    _p("depth_topics", [], "depth sensor_msgs/Image topics (16UC1 mm or 32FC1 m), one per "
       "depth camera", kind=list, topic=True),
    _p("joint_state_topic", "joint_states", "sensor_msgs/JointState topic; empty = none",
       topic=True),
    _p("joint_names", [], "joint order of the state vector; empty = the message's own order",
       kind=list),
    _p("ee_pose_topic", "", "geometry_msgs/PoseStamped end-effector pose topic; empty = none",
       topic=True),
    _p("object_pose_topic", "", "geometry_msgs/PoseStamped pose of the manipulated object "
       "(MetaObs.state_obj: x, y, z, qx, qy, qz, qw); empty = none", topic=True),
    _p("pointcloud_topic", "", "sensor_msgs/PointCloud2 topic (float32 x, y, z); empty = none",
       topic=True),
    _p("language_topic", "", "std_msgs/String instruction topic (latched); empty = none",
       topic=True),
    _p("required_inputs", ["cameras", "joints"],
       "inputs an observation must have: cameras, depth, joints, ee, object, pointcloud, "
       "language",
       kind=list),
    _p("state_inputs", ["joints"],
       "what MetaObs.state concatenates, in order: joints (in joint_names order), ee and/or "
       "object (poses: x, y, z, qx, qy, qz, qw); each must also be in required_inputs",
       kind=list),
    _p("sync_slop", 0.05, "largest stamp difference (s) between messages of one observation",
       min=0.0, max=10.0),
    _p("max_observation_age", 0.5, "observations older than this (s) never trigger inference",
       min=0.001, max=3600.0),
    _p("inference_rate", 0.0, "inference rate in Hz; 0 = on every new complete observation",
       min=0.0, max=1000.0),
    _p("camera_qos", "sensor_data", "QoS of camera and depth subscriptions",
       choices=QOS_CHOICES),
    _p("state_qos", "sensor_data", "QoS of joint state, pose and point cloud subscriptions",
       choices=QOS_CHOICES),
    _p("language_qos", "reliable",
       "QoS of the language subscription; latched (transient local) receives an instruction "
       "published before the node started, but matches only latched publishers",
       choices=QOS_CHOICES),
    # Outputs.
    _p("action_topic", "~/action_chunk", "policy_server_ros/ActionChunk output topic", topic=True),
    _p("trajectory_topic", "~/joint_trajectory",
       "trajectory_msgs/JointTrajectory output topic (published when action_joint_names is set)",
       topic=True),
    _p("action_joint_names", [],
       "joint names of the action dimensions; when set, JointTrajectory is published too",
       kind=list),
    _p("trajectory_stamp", "observation",
       "header.stamp of the JointTrajectory: observation (the observation's time: a "
       "joint_trajectory_controller skips the steps inference took, but rejects a trajectory "
       "that already ended), now (when published) or zero (the controller starts it on "
       "receipt)", choices=("observation", "now", "zero")),
    _p("trajectory_time_offset", 0.0,
       "time_from_start (s) of the JointTrajectory's first point; point i at offset + i * "
       "action_period", min=0.0, max=10.0),
    _p("frame_id", "base_link", "header.frame_id of the published chunks"),
    _p("action_period", 0.02, "time (s) between consecutive actions of a chunk (ALOHA: 50 Hz)",
       min=1e-4, max=10.0),
    # Executing chunks: one command per control step (chunk_scheduler, command_stream).
    _p("execution_mode", "none",
       "none (publish chunks only), chunk (the newest chunk step by step), ensemble (ACT's "
       "temporal ensembling of every chunk covering now) or aggregate (overlapping steps merged "
       "by aggregate_fn): commands on command_topic at control_rate",
       choices=("none", *MODES)),
    _p("control_rate", 0.0, "Hz of the command stream, on the node's clock; 0 = 1 / "
       "action_period", min=0.0, max=10000.0),
    _p("ensemble_decay", 0.01, "ensemble: k of the weights exp(-k * j), j = 0 the oldest "
       "chunk (ACT's 0.01)", min=0.0, max=10.0),
    _p("aggregate_fn", "weighted",
       "aggregate: how a new chunk merges with the plan on shared steps: weighted (0.3 old + "
       "0.7 new), latest, average, conservative (0.7 old + 0.3 new)",
       choices=tuple(AGGREGATE_FUNCTIONS)),
    _p("refill_threshold", 0.5,
       "chunk, aggregate: run inference when the share of the newest chunk still ahead falls "
       "to this (LeRobot's chunk_size_threshold); ensemble infers on every observation",
       min=0.0, max=1.0),
    _p("hold_timeout", 0.1,
       "s to hold the last command when no chunk covers now (absolute actions repeated, deltas "
       "zero); then no command", min=0.0, max=60.0),
    _p("latency_compensation", True,
       "step i of a chunk is for the observation's stamp + i * action_period (the steps "
       "inference took are skipped); false: for the chunk's arrival + i * action_period"),
    _p("command_topic", "~/command", "output topic of the commands", topic=True),
    _p("command_type", "float64_array",
       "message of the commands: float64_array (std_msgs/Float64MultiArray, for ros2_control's "
       "forward_command_controller), joint_state (sensor_msgs/JointState positions) or "
       "joint_trajectory (one point, for the joint_trajectory_controller); the last two need "
       "action_joint_names and joint/abs actions",
       choices=("float64_array", "joint_state", "joint_trajectory")),
    _p("command_min", [], "lowest command value per action dimension (one value: all); "
       "empty = none", kind=list, **NUMBER),
    _p("command_max", [], "highest command value per action dimension (one value: all); "
       "empty = none", kind=list, **NUMBER),
    _p("max_command_step", [], "largest change between consecutive commands per dimension "
       "(for delta actions: largest delta); one value: all; empty = none", kind=list, **NUMBER),
    # The socket bridge.
    _p("socket_bridge_enabled", True, "serve the TCP socket protocol from this node too"),
    _p("socket_host", "0.0.0.0", "socket bridge address"),
    _p("socket_port", 5000, "socket bridge port", min=0, max=65535),
    _p("socket_max_connections", 64, "socket bridge connection cap", min=1, max=4096),
    _p("socket_auth_token_file", "",
       "file holding the socket bridge's shared token (clients must authenticate); empty = "
       "POLICY_SERVER_AUTH_TOKEN if set, else no authentication"),
    _p("socket_inference_timeout", 60.0,
       "seconds a socket client waits for the policy before it is answered []; with backend ray "
       "also the longest a ROS observation waits (then it counts as a failure)",
       min=0.1, max=3600.0),
)

BY_NAME = {p.name: p for p in NODE_PARAMETERS}
