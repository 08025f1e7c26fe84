"""python -m policy_server_ros.bag_tools: the policy_server_bag command."""

import sys

from policy_server_ros.bag_tools.cli import main

sys.exit(main())
