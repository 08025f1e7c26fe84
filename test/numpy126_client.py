"""Run by test_numpy126_compat.py inside a venv pinned to numpy 1.26.0 (what ILStudio clients
pin; 1.26.0 lacks the numpy._core alias that later 1.26 releases added).

Talks to the server twice: with PolicyClient, and with the guide's plain pickle + struct client.
Prints one JSON line of what it received.
"""

import json
import pickle
import socket
import struct
import sys

import numpy as np

from benchmark.base import MetaAction, MetaObs
from socket_bridge.client import PolicyClient

host, port = sys.argv[1], int(sys.argv[2])
state = np.linspace(0.0, 1.0, 14)
result = {"numpy": np.__version__}

with PolicyClient(host, port) as client:
    reply = client.send_meta_obs(MetaObs(state=state, image=np.zeros((1, 3, 8, 8), np.uint8)))
    result["client_unbatched"] = [a.action.tolist() for a in reply[:2]]
    result["client_types"] = sorted({type(a).__name__ for a in reply})
    batched = client.send_meta_obs(MetaObs(state=np.stack([state, state + 1])))
    result["client_batched"] = batched[1][1]["action"].tolist()


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


with socket.create_connection((host, port)) as sock:
    payload = pickle.dumps(MetaObs(state=state, raw_lang="pick"))
    sock.sendall(struct.pack(">I", len(payload)) + payload)
    (length,) = struct.unpack(">I", recv_exactly(sock, 4))
    reply = pickle.loads(recv_exactly(sock, length))  # plain pickle, as the guide's client
    assert all(isinstance(a, MetaAction) for a in reply)
    result["plain_unbatched"] = [a.action.tolist() for a in reply[:2]]
    result["plain_dtype"] = str(reply[0].action.dtype)

print(json.dumps(result))
