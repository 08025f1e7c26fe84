"""Length-prefixed frames: a 4-byte big-endian unsigned length, then that many payload bytes.

The one frame reader and writer of the project; the server and the client both use it.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

HEADER = struct.Struct(">I")

# Several 1080p RGB cameras (6.2 MB each raw) plus depth fit; a peer cannot make us allocate GBs.
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024


# Payloads up to this size are sent together with their header in one send call.
_COALESCE_BYTES = 64 * 1024
# Buffers per sendmsg call; well below the kernel's IOV_MAX of 1024.
_MAX_IOVEC = 512


class FrameError(Exception):
    """The peer broke the framing rules; the connection cannot be used any more."""


class PeerClosed(FrameError):
    """The peer closed the connection between frames: the normal end of a session."""


class FrameTooLarge(FrameError):
    """The length prefix exceeds the configured maximum; nothing was allocated for it."""


class FrameTimeout(FrameError):
    """A frame in progress (or an idle connection) ran past its time limit."""


Buffer = bytes | bytearray | memoryview


def write_frame(sock: socket.socket, payload: Buffer | list[Buffer]) -> None:
    """Send one frame whose payload is `payload`, or the concatenation of a list of chunks
    (sent with scatter-gather I/O, never joined into one copy).

    The caller's socket timeout bounds how long a slow reader can stall us.
    """
    chunks = [memoryview(c).cast("B") for c in (payload if isinstance(payload, list)
                                                 else [payload])]
    length = sum(c.nbytes for c in chunks)
    header = HEADER.pack(length)
    if length <= _COALESCE_BYTES:
        sock.sendall(header + b"".join(chunks))  # one segment: no Nagle/delayed-ACK stall
        return
    pending = [memoryview(header), *chunks]
    while pending:
        sent = sock.sendmsg(pending[:_MAX_IOVEC])
        while sent:
            if sent >= pending[0].nbytes:
                sent -= pending.pop(0).nbytes
            else:
                pending[0] = pending[0][sent:]
                sent = 0


def _recv_exactly(sock: socket.socket, view: memoryview, deadline: float | None, what: str) -> None:
    """Fill `view` from the socket, failing when the deadline passes or the peer goes away."""
    got = 0
    while got < len(view):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout(f"timed out reading {what} ({got}/{len(view)} bytes received)")
            sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError as exc:
            raise FrameTimeout(
                f"timed out reading {what} ({got}/{len(view)} bytes received)") from exc
        if n == 0:
            raise ConnectionError(f"peer closed the connection in the middle of {what} "
                                  f"({got}/{len(view)} bytes received)")
        got += n


def read_frame(
    sock: socket.socket,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    frame_timeout: float | None = 30.0,
    idle_timeout: float | None = None,
    buffer: bytearray | None = None,
) -> memoryview:
    """Read one frame and return a view of its payload.

    `idle_timeout` bounds the wait for the first byte of a frame (clients may think between
    requests; None waits forever). Once a frame has started, the rest of it (header and payload)
    must arrive within `frame_timeout` seconds. The length is checked against `max_bytes`
    before the payload buffer is allocated.

    With `buffer` (see FrameReader) the payload lands in it when it is large enough, and the
    view is only valid until the buffer is reused; otherwise a new buffer is allocated.

    Raises PeerClosed on a clean close before a frame, FrameTimeout, FrameTooLarge, or
    ConnectionError when the peer vanishes mid-frame.
    """
    header = bytearray(HEADER.size)
    view = memoryview(header)
    sock.settimeout(idle_timeout)
    try:
        n = sock.recv_into(view)
    except TimeoutError as exc:
        raise FrameTimeout(f"connection idle for more than {idle_timeout:g} s") from exc
    if n == 0:
        raise PeerClosed("peer closed the connection")
    deadline = None if frame_timeout is None else time.monotonic() + frame_timeout
    _recv_exactly(sock, view[n:], deadline, "the frame header")
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_bytes} bytes "
                            f"(raise --max_frame_bytes if this is a legitimate observation)")
    if buffer is None or len(buffer) < length:
        buffer = bytearray(length)
    payload = memoryview(buffer)[:length]
    _recv_exactly(sock, payload, deadline, f"a {length}-byte frame")
    return payload


class FrameReader:
    """Reads a connection's frames into one reused buffer.

    A fresh 1 MB buffer per request costs more than the rest of a request (allocation, zeroing,
    page faults). Buffers up to `keep_bytes` are kept between frames; a rare larger frame gets a
    buffer of its own that is dropped afterwards, so an idle connection holds at most that much.
    Decoded camera images may be views of the buffer (safe_loads alias), so it is reused only
    once nothing refers to it.
    """

    def __init__(self, sock: socket.socket, max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 frame_timeout: float | None = 30.0, idle_timeout: float | None = None,
                 keep_bytes: int = 16 * 1024 * 1024) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.keep_bytes = keep_bytes
        self._buffer = bytearray()

    def read(self) -> memoryview:
        """The next frame's payload. Its buffer is reused for a later frame only once nothing
        refers to it any more (no view of the payload, or of arrays decoded from it, is alive):
        until then, later frames get new buffers."""
        if sys.getrefcount(self._buffer) > 2:  # self._buffer and the argument: nothing else
            self._buffer = bytearray()
        payload = read_frame(self.sock, self.max_bytes, self.frame_timeout, self.idle_timeout,
                             self._buffer)
        if payload.obj is not self._buffer and len(payload) <= self.keep_bytes:
            self._buffer = payload.obj  # grow to the largest frame seen, up to keep_bytes
        return payload
