"""policy_server_ros: serve an imitation-learning policy to robots over ROS 2 and TCP."""

import pkgutil

# The generated message package (policy_server_ros.msg) and its compiled typesupport modules are
# installed into site-packages by the build, while a source checkout holds only the hand-written
# modules. Extending __path__ lets `policy_server_ros.msg` resolve from the installed copy when
# the checkout's package is imported first (tests and scripts run from the repository root).
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
