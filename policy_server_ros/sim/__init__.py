"""Closed-loop simulation: the ALOHA transfer-cube task (gym-aloha's assets and TransferCubeTask,
MuJoCo 3.x) as a ROS 2 robot, scripted demonstrations, and the `policy_server_sim` evaluation.

Its dependencies (mujoco, dm-control, gym-aloha, imageio) are the optional extra `[sim]`; the
core package never imports this subpackage. `episodes.py` is numpy-only, so the demonstration
generator (run in a side venv with MuJoCo 2.3.7) can share it.
"""
