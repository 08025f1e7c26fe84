"""The watchdog that answers requests running on their connection's thread at the timeout."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time

import pytest
from conftest import recv_exactly

from socket_bridge.framing import HEADER
from socket_bridge.protocol import EMPTY_REPLY
from socket_bridge.reply_deadlines import ReplyDeadlines
from socket_bridge.server import PolicySocketServer


def test_every_request_is_answered_exactly_once_by_its_connection_or_the_watchdog() -> None:
    expired: list[tuple[int, int]] = []
    disarmed: list[tuple[int, int]] = []
    deadlines = ReplyDeadlines(0.002, expired.append)

    def connection(key: int) -> None:
        rng = random.Random(key)
        for request in range(150):
            deadlines.arm(key, (key, request))
            time.sleep(rng.choice([0, 0.001, 0.003]))  # around the deadline
            if deadlines.disarm(key):
                disarmed.append((key, request))

    threads = [threading.Thread(target=connection, args=(key,)) for key in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    deadlines.close()
    assert not set(expired) & set(disarmed)
    assert sorted(expired + disarmed) == [(k, r) for k in range(6) for r in range(150)]
    assert expired and disarmed  # both sides won some


def test_a_deadline_is_answered_on_time_and_a_failing_answer_stops_nothing(caplog) -> None:
    answered: list[tuple[str, float]] = []

    def answer(item: str) -> None:
        answered.append((item, time.monotonic()))
        if item == "first":
            raise RuntimeError("the client vanished")

    deadlines = ReplyDeadlines(0.2, answer)
    try:
        time.sleep(0.15)  # the watchdog sleeps one timeout while nothing is armed
        start = time.monotonic()
        deadlines.arm(1, "first")
        deadlines.arm(2, "second")
        assert deadlines.disarm(3) is False  # never armed
        time.sleep(0.6)
    finally:
        deadlines.close()
    assert [item for item, _ in answered] == ["first", "second"]
    assert all(0.15 < at - start < 0.45 for _, at in answered)
    assert "answering a request past its deadline failed" in caplog.text
    assert not deadlines._thread.is_alive()


def test_a_zero_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        ReplyDeadlines(0, print)


def test_the_answer_at_the_deadline_is_one_empty_reply_frame() -> None:
    server = PolicySocketServer(backend=object())
    ours, client = socket.socketpair()
    with ours, client:
        server._answer_at_deadline((ours, "peer", 7))
        (length,) = HEADER.unpack(recv_exactly(client, 4))
        assert recv_exactly(client, length) == EMPTY_REPLY


def test_a_client_that_does_not_read_is_shut_down_instead_of_blocking_the_watchdog(
        caplog) -> None:
    caplog.set_level(logging.WARNING)
    server = PolicySocketServer(backend=object())
    ours, client = socket.socketpair()
    with ours, client:
        ours.setblocking(False)
        try:
            while True:  # fill everything between us and the client that never reads
                ours.send(b"x" * 65536)
        except BlockingIOError:
            pass
        ours.settimeout(30)  # as the connection's thread leaves it: must not wait 30 s here
        start = time.monotonic()
        server._answer_at_deadline((ours, "peer", 7))
        assert time.monotonic() - start < 1
        assert ours.recv(1) == b""  # shut down (its own thread closes it, once back)
        client.settimeout(10)
        while chunk := client.recv(1 << 20):  # the filler, then the end: no [] frame
            assert set(chunk) == {ord("x")}
    assert "Client #7 peer: cannot send [] (the client does not read its replies); closing " \
           "connection" in caplog.text
