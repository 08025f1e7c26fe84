"""socket_bridge.framing over real socket pairs."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from socket_bridge.framing import (
    FrameReader,
    FrameTimeout,
    FrameTooLarge,
    PeerClosed,
    read_frame,
    write_frame,
)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("size", [0, 1, 100, 70_000, 3 * 480 * 640 + 200])
def test_round_trip(pair, size: int) -> None:
    a, b = pair
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sender = threading.Thread(target=write_frame, args=(a, payload))
    sender.start()
    assert read_frame(b, frame_timeout=5) == payload
    sender.join()


def test_frame_arriving_in_small_pieces_is_reassembled(pair) -> None:
    a, b = pair
    wire = struct.pack(">I", 10) + b"0123456789"

    def trickle() -> None:
        for i in range(len(wire)):
            a.sendall(wire[i:i + 1])
            time.sleep(0.005)

    threading.Thread(target=trickle).start()
    assert read_frame(b, frame_timeout=5) == b"0123456789"


def test_oversized_length_is_refused_before_reading_the_payload(pair) -> None:
    a, b = pair
    a.sendall(struct.pack(">I", 0xFFFFFFFF))
    with pytest.raises(FrameTooLarge, match="4294967295 bytes exceeds the limit of 1000"):
        read_frame(b, max_bytes=1000)


def test_clean_close_between_frames_is_peer_closed(pair) -> None:
    a, b = pair
    a.close()
    with pytest.raises(PeerClosed):
        read_frame(b)


def test_close_in_the_middle_of_a_frame_is_a_connection_error(pair) -> None:
    a, b = pair
    a.sendall(struct.pack(">I", 100) + b"only part")
    a.close()
    with pytest.raises(ConnectionError, match="9/100 bytes"):
        read_frame(b, frame_timeout=5)


def test_started_frame_must_complete_within_frame_timeout(pair) -> None:
    a, b = pair
    a.sendall(struct.pack(">I", 100) + b"x")
    start = time.monotonic()
    with pytest.raises(FrameTimeout, match="1/100 bytes"):
        read_frame(b, frame_timeout=0.3)
    assert time.monotonic() - start < 3


def test_idle_timeout_bounds_the_wait_for_a_new_frame(pair) -> None:
    _, b = pair
    with pytest.raises(FrameTimeout, match="idle"):
        read_frame(b, idle_timeout=0.2)


def test_chunked_payload_is_sent_as_one_frame(pair) -> None:
    a, b = pair
    chunks = [b"head", bytes(range(256)) * 1000, bytearray(b"mid"), memoryview(b"x" * 70_000)]
    sender = threading.Thread(target=write_frame, args=(a, chunks))
    sender.start()
    assert read_frame(b, frame_timeout=5) == b"".join(bytes(c) for c in chunks)
    sender.join()


def test_a_buffer_is_reused_only_once_nothing_refers_to_it(pair) -> None:
    """The server decodes camera images as views of the frame buffer (safe_loads alias): a
    frame must never land in a buffer that such a view still shows."""
    import numpy as np

    a, b = pair
    reader = FrameReader(b, frame_timeout=5)
    for fill in (1, 2, 3):
        write_frame(a, bytes([fill]) * 1000)
    image = np.frombuffer(reader.read(), np.uint8)  # a view, as an aliased image is
    second = reader.read()
    assert second.obj is not image.base.obj and set(image.tolist()) == {1}
    held = id(second.obj)  # the reader keeps it alive: the id stays its own
    del second
    third = reader.read()  # nothing refers to the second buffer any more: reused
    assert id(third.obj) == held and set(bytes(third)) == {3}
    assert set(image.tolist()) == {1}
