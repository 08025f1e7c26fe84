#!/usr/bin/env bash
# Quick start, command 1: set up the venv, then run the policy_server ROS 2 node serving the
# example checkpoint, with the socket bridge on port 5000. Extra arguments are ROS arguments,
# e.g. scripts/run.sh -p device:=cpu -p camera_topics:="[/cam/image_raw]"
#
# scripts/run.sh --demo [ROS args]: the same node, fed by the sample robot bag (written to
# results/sample_bag on first use) replayed in a loop; prints action chunks and their latency
# every second until Ctrl+C. The node's log goes to results/demo_node.log.
#
# scripts/run.sh --sim [policy_server_sim eval options]: the simulated ALOHA (MuJoCo, headless)
# driven through ROS 2 by the node serving the trained transfer-cube MLP, 5 episodes on seeds
# it was not trained on; prints each episode's outcome, writes results/sim_run/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup_venv.sh"
venv=${VENV:-$root/.venv}
# Whole camera frames over best-effort QoS need a large shared-memory segment (see README).
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$root/config/fastdds_large_shm.xml}
cd "$root"

if [ "${1:-}" = "--sim" ]; then
  shift
  exec "$venv/bin/python" -m policy_server_ros.sim eval --model examples/sim_transfer_cube/mlp \
    --seeds 100-104 --out results/sim_run "$@"
fi
if [ "${1:-}" != "--demo" ]; then
  exec "$venv/bin/python" -m policy_server_ros --ros-args "$@"
fi
shift
# The demo publishes made-up camera and joint data: keep it off the network.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
bag=${DEMO_BAG:-results/sample_bag}
mkdir -p results
[ -d "$bag" ] || "$venv/bin/policy_server_bag" make-sample "$bag"
log=results/demo_node.log
"$venv/bin/python" -m policy_server_ros --ros-args -p socket_bridge_enabled:=false "$@" \
  >"$log" 2>&1 &
node=$!
trap 'kill -INT $node 2>/dev/null || true; wait $node 2>/dev/null || true' EXIT
echo "==> starting the policy_server node (log: $log)"
for _ in $(seq 600); do
  grep -q "policy_server ready" "$log" && break
  kill -0 $node 2>/dev/null || { cat "$log"; echo "error: the node exited" >&2; exit 1; }
  sleep 0.2
done
grep -q "policy_server ready" "$log" || { cat "$log"; echo "error: the node did not start" >&2; exit 1; }
echo "==> replaying $bag into it (Ctrl+C stops both)"
"$venv/bin/policy_server_bag" replay "$bag" --restamp --loop \
  --monitor /policy_server/action_chunk
