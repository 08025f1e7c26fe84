"""The TCP policy server: many clients, one shared inference backend, limits everywhere.

Each connection gets a thread that reads a frame, decodes it safely, hands the observation to the
backend (the inference engine), or runs it itself when the engine is idle (`run_here`), and
writes the reply. A peer can cost us at most one frame of `max_frame_bytes`, one connection
slot, and the configured timeouts; whatever it sends, the other clients keep being served.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import itertools
import logging
import select
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from policy_server_ros.engine import BackendUnavailable, EngineBusy, EngineClosed
from policy_server_ros.policies.base import PolicyOutput
from socket_bridge import auth
from socket_bridge.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    FrameError,
    FrameReader,
    FrameTimeout,
    FrameTooLarge,
    PeerClosed,
    read_frame,
    write_frame,
)
from socket_bridge.protocol import EMPTY_REPLY, ProtocolError, decode_request
from socket_bridge.reply_deadlines import ReplyDeadlines
from socket_bridge.reply_encoder import ReplyEncoder
from socket_bridge.safe_unpickle import UnsafePickleError
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.socket_server")


class InferenceBackend(Protocol):
    """What the server needs from the engine: a thread-safe submit returning a Future. A backend
    may also offer `run_here(obs) -> PolicyOutput | None` (InferenceEngine does): run on the
    calling thread when idle, None when not."""

    def submit(self, obs: MetaObs) -> Future[PolicyOutput]: ...


class _AnsweredAtDeadline(Exception):
    """The watchdog answered [] at the inference timeout; the late result has nobody to go to."""


@dataclass
class ServerConfig:
    """Network settings and the limits a peer cannot exceed. Timeouts in seconds; 0 = none."""

    host: str = "0.0.0.0"
    port: int = 5000
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    frame_timeout: float = 30.0  # a started frame must be complete within this
    idle_timeout: float = 600.0  # longest silence between requests before we hang up
    send_timeout: float = 30.0  # a client that does not read its reply for this long is dropped
    inference_timeout: float = 60.0  # longest wait for the engine; the client then gets []
    max_connections: int = 64
    # Shared token (see auth.py); None: no authentication, as the original protocol.
    auth_token: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_frame_bytes < 16 or self.max_frame_bytes >= 1 << 32:
            raise ValueError(f"max_frame_bytes must be in 16..{(1 << 32) - 1}, "
                             f"got {self.max_frame_bytes}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in ("frame_timeout", "idle_timeout", "send_timeout", "inference_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {getattr(self, name)}")


def _or_none(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


class PolicySocketServer:
    """Serves `backend` over the length-prefixed pickle protocol.

    `start()` binds and returns; `serve_forever()` blocks until `stop()` (from another thread or
    a signal handler). Port 0 binds an ephemeral port; `address` tells which.
    """

    def __init__(self, backend: InferenceBackend, config: ServerConfig | None = None) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._accept_thread: threading.Thread | None = None
        self._clients: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._stopped = threading.Event()
        self._encoder = ReplyEncoder()
        self._backend_run_here = getattr(backend, "run_here", None)
        self._deadlines: ReplyDeadlines | None = None  # for requests run here, with a timeout
        self.requests_served = 0

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; with port 0, the ephemeral port chosen."""
        if self._address is None:
            raise RuntimeError("server not started")
        return self._address

    @property
    def is_alive(self) -> bool:
        """False once the accept thread has died (or the server was stopped)."""
        return (not self._stopped.is_set() and self._accept_thread is not None
                and self._accept_thread.is_alive())

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def start(self) -> None:
        cfg = self.config
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        try:
            self._listener = socket.create_server((cfg.host, cfg.port), family=family,
                                                  backlog=cfg.max_connections)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror} "
                          f"(is another server running? choose another --port)") from exc
        self._address = tuple(self._listener.getsockname()[:2])
        if self._backend_run_here is not None and cfg.inference_timeout > 0:
            self._deadlines = ReplyDeadlines(cfg.inference_timeout, self._answer_at_deadline)
        if cfg.auth_token is None and not auth.is_loopback(cfg.host):
            log.warning("Listening on %s:%d without authentication: anyone who can reach this "
                        "port can use the policy. Set %s or --auth_token_file, or bind to "
                        "127.0.0.1.", cfg.host, self._address[1], auth.ENV_VAR)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="socket-accept",
                                               daemon=True)
        self._accept_thread.start()
        host, port = self.address
        log.info("🚀 Policy Server started on %s:%d", host, port)

    def serve_forever(self) -> None:
        if self._listener is None:
            self.start()
        self._stopped.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, hang up on every client and wait for their threads."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._listener is not None:
            _hang_up(self._listener)  # wakes the blocked accept()
        with self._lock:
            clients = list(self._clients.values())
        for conn, _ in clients:
            _hang_up(conn)
        for _, thread in clients:
            thread.join(timeout)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._deadlines is not None:
            self._deadlines.close(timeout)
        log.info("Policy Server stopped (%d requests served)", self.requests_served)

    def __enter__(self) -> PolicySocketServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                conn, addr = self._listener.accept()
            except OSError as exc:
                if self._stopped.is_set():
                    return
                if exc.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                    log.error("listening socket failed (%s); the socket server stops accepting",
                              exc)
                    return
                # Out of descriptors or memory: back off instead of spinning, keep serving.
                log.warning("accept failed (%s); retrying", exc)
                time.sleep(0.1)
                continue
            self._admit(conn, addr)

    def _admit(self, conn: socket.socket, addr: Any) -> None:
        with self._lock:
            if len(self._clients) >= self.config.max_connections:
                log.warning("Refused connection from %s: %d connections open "
                            "(--max_connections)", addr, len(self._clients))
                _hang_up(conn)
                return
            number = next(self._numbers)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve_client, args=(conn, addr, number),
                                      name=f"socket-client-{number}", daemon=True)
            self._clients[number] = (conn, thread)
        log.info("✓ Client #%d connected from %s", number, addr)
        thread.start()

    def _serve_client(self, conn: socket.socket, addr: Any, number: int) -> None:
        served = 0
        cfg = self.config
        reader = FrameReader(conn, cfg.max_frame_bytes, _or_none(cfg.frame_timeout),
                             _or_none(cfg.idle_timeout))
        try:
            if cfg.auth_token is not None and not self._authenticate(conn, addr, number):
                return
            while not self._stopped.is_set():
                payload = self._read_request(reader, addr, number)
                if payload is None:
                    break
                try:
                    # Images may be views of the frame buffer: the reader never reuses a
                    # buffer that something still refers to.
                    obs = decode_request(payload, alias=True)
                except UnsafePickleError as exc:
                    log.warning("Client #%d %s: refused unsafe pickle (%s); closing connection",
                                number, addr, exc)
                    break
                except Exception as exc:  # any malformed pickle: the original closes too
                    log.warning("Client #%d %s: undecodable frame (%s: %s); closing connection",
                                number, addr, type(exc).__name__, exc)
                    break
                del payload
                reply = self._infer(obs, conn, addr, number)
                del obs  # its images may be views of the reader's buffer: let it be reused
                if reply is not None:  # None: answered [] at the deadline already
                    conn.settimeout(_or_none(self.config.send_timeout))
                    write_frame(conn, reply)
                served += 1
                with self._lock:
                    self.requests_served += 1
                if served % 10 == 0:
                    log.info("  Client #%d: %d requests processed", number, served)
        except OSError as exc:
            if not self._stopped.is_set():
                log.warning("Client #%d %s: connection lost (%s)", number, addr, exc)
        finally:
            _hang_up(conn)
            with self._lock:
                self._clients.pop(number, None)
            log.info("  Client #%d connection closed (processed %d requests)", number, served)

    def _authenticate(self, conn: socket.socket, addr: Any, number: int) -> bool:
        """The client's first frame must be the handshake; nothing it sent is unpickled."""
        cfg = self.config
        try:
            frame = read_frame(conn, auth.MAX_HANDSHAKE_BYTES, _or_none(cfg.frame_timeout),
                               _or_none(cfg.frame_timeout))
        except (FrameError, OSError) as exc:
            log.warning("Client #%d %s: no authentication handshake (%s); closing", number, addr,
                        exc)
            return False
        if not auth.verify_handshake(frame, cfg.auth_token):
            log.warning("Client #%d %s: authentication failed (first frame is not the handshake "
                        "with the right token); closing without decoding anything", number, addr)
            return False
        conn.settimeout(_or_none(cfg.send_timeout))
        write_frame(conn, auth.ACCEPTED)
        log.info("  Client #%d authenticated", number)
        return True

    def _read_request(self, reader: FrameReader, addr: Any, number: int) -> memoryview | None:
        try:
            return reader.read()
        except PeerClosed:
            return None
        except (FrameTooLarge, FrameTimeout) as exc:
            log.warning("Client #%d %s: %s; closing connection", number, addr, exc)
        except (FrameError, OSError) as exc:
            if not self._stopped.is_set():
                log.warning("Client #%d %s: %s", number, addr, exc)
        return None

    def _infer(self, obs: MetaObs, conn: socket.socket, addr: Any,
               number: int) -> bytes | bytearray | None:
        """Run one request through the backend; any failure becomes the empty reply `[]`.
        None: the request was answered [] at its deadline while it ran (see _run_here)."""
        future: Future | None = None
        try:
            output = self._run_here(obs, conn, addr, number)
            if output is None:
                future = self.backend.submit(obs)
                output = future.result(timeout=_or_none(self.config.inference_timeout))
            return self._encoder.encode(output)
        except _AnsweredAtDeadline:
            log.info("Client #%d %s: the request answered [] at the inference timeout finished; "
                     "its late result is dropped", number, addr)
            return None
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._log_timeout(addr, number)
        except (ValueError, ProtocolError) as exc:  # bad observation: the client's mistake
            log.warning("Client #%d %s: bad observation: %s; replying []", number, addr, exc)
        except (EngineBusy, EngineClosed) as exc:  # refused, not failed: no traceback
            log.warning("Client #%d %s: request not run: %s; replying []", number, addr, exc)
        except BackendUnavailable as exc:  # a replica died, the cluster went away: one line
            log.error("Client #%d %s: %s; replying []", number, addr, exc)
        except Exception as exc:
            if type(exc).__name__ == "OutOfMemoryError":  # torch's, without importing torch
                log.error("Client #%d %s: out of GPU memory (%s); replying []. Try --device cpu, "
                          "a smaller --chunk_size or --max_batch, or --precision bf16",
                          number, addr, str(exc).splitlines()[0] if str(exc) else "")
            else:
                log.exception("Client #%d %s: inference failed; replying []", number, addr)
        return EMPTY_REPLY

    def _run_here(self, obs: MetaObs, conn: socket.socket, addr: Any,
                  number: int) -> PolicyOutput | None:
        """The backend's run_here (None: it has none, or it is busy), under the inference
        timeout: past it, the watchdog answers [] and this raises _AnsweredAtDeadline."""
        if self._backend_run_here is None:
            return None
        if self._deadlines is None:
            return self._backend_run_here(obs)
        self._deadlines.arm(number, (conn, addr, number))
        try:
            output = self._backend_run_here(obs)
        except Exception:
            if self._deadlines.disarm(number):
                raise
            raise _AnsweredAtDeadline from None
        if not self._deadlines.disarm(number):
            raise _AnsweredAtDeadline
        return output

    def _answer_at_deadline(self, item: tuple[socket.socket, Any, int]) -> None:
        """The watchdog's answer to a request still running past the inference timeout: [],
        sent only if it fits the socket at once (the connection's thread is busy in the policy,
        so nobody waits for a slow reader here); otherwise the connection is shut down."""
        conn, addr, number = item
        self._log_timeout(addr, number)
        frame = HEADER.pack(len(EMPTY_REPLY)) + EMPTY_REPLY
        try:
            poller = select.poll()
            poller.register(conn, select.POLLOUT)
            if not poller.poll(0) or conn.send(frame, socket.MSG_DONTWAIT) != len(frame):
                raise OSError("the client does not read its replies")
        except (OSError, ValueError) as exc:
            log.warning("Client #%d %s: cannot send [] (%s); closing connection", number, addr,
                        exc)
            with contextlib.suppress(OSError):  # its thread closes the socket once it returns
                conn.shutdown(socket.SHUT_RDWR)

    def _log_timeout(self, addr: Any, number: int) -> None:
        log.error("Client #%d %s: inference took longer than %.1f s (--inference_timeout); "
                  "replying []", number, addr, self.config.inference_timeout)


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already disconnected
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
