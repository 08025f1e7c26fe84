"""python -m policy_server_ros.sim: the policy_server_sim command."""

import sys

from policy_server_ros.sim.cli import main

sys.exit(main())
