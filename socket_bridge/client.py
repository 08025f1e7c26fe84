"""`PolicyClient`: the Python client of the socket protocol, as in the original guide.

    with PolicyClient("localhost", 5000) as client:
        actions = client.send_meta_obs(MetaObs(state=..., image=..., raw_lang="pick up the cube"))

Replies are decoded with the same restricted unpickler the server uses: a compromised or
impostor server cannot run code in the client either.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import Any

from socket_bridge import auth
from socket_bridge.framing import DEFAULT_MAX_FRAME_BYTES, FrameError, read_frame, write_frame
from socket_bridge.protocol import decode_reply
from socket_bridge.request_encoder import RequestEncoder
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.client")

__all__ = ["PolicyClient"]


class PolicyClient:
    """Blocking client: one request, one reply.

    connect_timeout bounds each connection attempt; read_timeout bounds the wait for a reply
    (which includes the server's inference time). A failed attempt is retried up to
    `max_retries` times with exponential backoff starting at `backoff` seconds.

    auth_token: for a server with authentication on (see socket_bridge/auth.py); when not given,
    POLICY_SERVER_AUTH_TOKEN is used if set. The handshake runs on every (re)connect.
    """

    def __init__(self, host: str = "localhost", port: int = 5000, *,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 max_retries: int = 3, backoff: float = 0.5,
                 max_reply_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 auth_token: str | bytes | None = None) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_reply_bytes = max_reply_bytes
        if isinstance(auth_token, str):
            auth_token = auth_token.encode()
        self.auth_token = auth_token if auth_token is not None else auth.load_token()
        self._sock: socket.socket | None = None
        self._encoder = RequestEncoder()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect, retrying with exponential backoff; raises ConnectionError when all fail."""
        if self._sock is not None:
            return
        delay = self.backoff
        for attempt in range(self.max_retries + 1):
            try:
                sock = socket.create_connection((self.host, self.port),
                                                timeout=self.connect_timeout)
            except OSError as exc:
                if attempt == self.max_retries:
                    raise ConnectionError(
                        f"cannot connect to policy server at {self.host}:{self.port} after "
                        f"{attempt + 1} attempts: {exc}") from exc
                log.info("connect to %s:%d failed (%s); retrying in %.2f s",
                         self.host, self.port, exc, delay)
                time.sleep(delay)
                delay *= 2
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.auth_token is not None:
                    self._handshake(sock)
                self._sock = sock
                return

    def _handshake(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(self.read_timeout)
            write_frame(sock, auth.handshake_frame(self.auth_token))
            answer = read_frame(sock, 64, frame_timeout=self.read_timeout,
                                idle_timeout=self.read_timeout)
        except (OSError, FrameError) as exc:
            sock.close()
            raise ConnectionError(f"policy server at {self.host}:{self.port} closed the "
                                  f"connection during authentication (wrong token?): {exc}") \
                from exc
        if bytes(answer) != auth.ACCEPTED:
            sock.close()
            raise ConnectionError(f"policy server at {self.host}:{self.port} did not accept "
                                  f"the authentication handshake")

    def send_meta_obs(self, obs: MetaObs) -> list[Any]:
        """Send one observation and return the server's reply (a list; `[]` on server error).

        When the connection was lost since the last request, reconnects once first. A connection
        lost during the request is raised, not retried: the server may have acted on it.
        """
        payload = self._encoder.encode(obs)
        if self._sock is not None and self._closed_by_peer(self._sock):
            log.info("server closed the connection since the last request; reconnecting")
            self.disconnect()
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            self._sock.settimeout(self.read_timeout)
            write_frame(self._sock, payload)
            reply = read_frame(self._sock, self.max_reply_bytes,
                               frame_timeout=self.read_timeout, idle_timeout=self.read_timeout)
        except FrameError as exc:  # closed, timed out or oversized: the connection is unusable
            self.disconnect()
            raise ConnectionError(f"policy server at {self.host}:{self.port}: {exc}") from exc
        except Exception:
            self.disconnect()
            raise
        return decode_reply(reply)

    @staticmethod
    def _closed_by_peer(sock: socket.socket) -> bool:
        # Between requests the server sends nothing, so readable-and-empty means it hung up.
        ready, _, _ = select.select([sock], [], [], 0)
        if not ready:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> PolicyClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
