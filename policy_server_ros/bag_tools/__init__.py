"""`policy_server_bag`: replay bags into the node, record topics, evaluate a policy open-loop
against a bag, and write a sample bag. Bags are read and written with `rosbags` (rosbag2's
sqlite3 and MCAP storage), so none of this needs a ROS install."""
