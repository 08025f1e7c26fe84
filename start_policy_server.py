#!/usr/bin/env python3
"""Serve a policy over TCP: the original guide's command line. See --help."""

import sys

from policy_server_ros.socket_server_cli import main

if __name__ == "__main__":
    sys.exit(main())
