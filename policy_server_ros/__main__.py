"""`python -m policy_server_ros`: the policy_server node, as the console script."""

import sys

from policy_server_ros.node import main

sys.exit(main())
