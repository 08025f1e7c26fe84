"""Python logging of the node's process, forwarded to the node's rclpy logger.

The engine, the socket bridge and the checkpoint loader log with Python's `logging` (they run
without ROS too). In the node those records go to the rclpy logger, so they reach /rosout and
the ROS console format like the node's own lines, instead of stderr only.
"""

from __future__ import annotations

import logging
import sys

from rclpy.context import Context
from rclpy.impl.rcutils_logger import RcutilsLogger

PACKAGE_LOGGER = "policy_server_ros"


class RosLogHandler(logging.Handler):
    """Sends each record to `ros_logger` at the matching severity while `context` is up; to
    stderr after it shuts down (rcl would only complain that /rosout is gone)."""

    def __init__(self, ros_logger: RcutilsLogger, context: Context) -> None:
        super().__init__()
        self._ros = ros_logger
        self._context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if not self._context.ok():
                sys.stderr.write(f"[{record.levelname}] [{self._ros.name}]: {text}\n")
                return
            level = record.levelno
            if level >= logging.CRITICAL:
                self._ros.fatal(text)
            elif level >= logging.ERROR:
                self._ros.error(text)
            elif level >= logging.WARNING:
                self._ros.warning(text)
            elif level >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:  # the node is gone (shutdown): plain stderr, not a logging traceback
            sys.stderr.write(f"[{record.levelname}] {record.getMessage()}\n")


def forward_to_ros(ros_logger: RcutilsLogger, context: Context) -> RosLogHandler:
    """Send the package's Python log records (socket bridge, engine, loaders) to `ros_logger`
    too; undo with `stop_forwarding`. Records still propagate (pytest's caplog sees them);
    the node's main() configures no stderr handler of its own, so nothing prints twice."""
    handler = RosLogHandler(ros_logger, context)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    package = logging.getLogger(PACKAGE_LOGGER)
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    return handler


def stop_forwarding(handler: RosLogHandler) -> None:
    logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)
