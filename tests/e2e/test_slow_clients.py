"""`make serve`'s web tier (gunicorn with uvicorn workers) against clients
that hold connections: idle ones, uploads that never finish, `?wait=`
long-polls and event streams. None of them keeps /health or POST /tasks
waiting, and the long-polls and streams still get their answers.

One web process: gthread's 1 x 4 threads would be held by the first four."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from .harness import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HELD = 50
# Generous: this checks that the server answers at all, not how fast.
ANSWER_WITHIN = 5


def connect(stack: Stack, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=60)
    sock.sendall(data)
    return sock


def read_status(sock: socket.socket) -> int:
    received = b""
    while b"\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1])


@pytest.fixture
def stack(tmp_path, request):
    stack = Stack(tmp_path, web_workers=1, env={"TASK_EVENTS_MAX_SECONDS": "120"})
    try:
        yield stack.start(("alice",))
    finally:
        stack.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(stack.all_logs(tail=6000))


def test_held_connections_leave_the_server_answering(stack):
    # /health answers 200 once a worker has beaten: before, it rightly says 503.
    for cluster in stack.clusters:
        cluster.wait_workers(1)
    session = stack.login()
    token = session.headers["Authorization"]
    # Finishes once it is released: a long-poll on it waits until then.
    task_id = stack.submit(session, "demo", {"seconds": 8})
    uploads = [
        connect(
            stack,
            b"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: " + token.encode() + b"\r\nContent-Length: 5000\r\n\r\n"
            b'{"type": "wordcount", "args": {"text": "',
        )
        for _ in range(HELD)
    ]
    idle = [connect(stack, b"GET /health HTTP/1.1\r\n") for _ in range(HELD)]
    polls = [
        connect(
            stack,
            f"GET /tasks/{task_id}?wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {token}\r\n\r\n".encode(),
        )
        for _ in range(HELD)
    ]
    streams = [
        connect(
            stack,
            f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Authorization: {token}\r\n\r\n".encode(),
        )
        for _ in range(HELD)
    ]
    try:
        # Every stream is open (answered): from here on they are held, and
        # the burst of their arrival is over.
        for sock in streams:
            assert read_status(sock) == 200
        for _ in range(5):
            started = time.monotonic()
            health = requests.get(stack.base + "/health", timeout=ANSWER_WITHIN)
            assert health.status_code == 200, health.text
            submitted = session.post(
                stack.base + "/tasks",
                json={"type": "wordcount", "args": {"text": "a b"}},
                timeout=ANSWER_WITHIN,
            )
            assert submitted.status_code == 202, submitted.text
            assert time.monotonic() - started < ANSWER_WITHIN

        # Every long-poll answers when the task ends.
        assert all(read_status(sock) == 200 for sock in polls)
        assert stack.task(session, task_id)["status"] == "completed"
        # The uploads never finished: none of them became a task.
        tasks = session.get(stack.base + "/tasks", timeout=ANSWER_WITHIN).json()["results"]
        assert len(tasks) == 1 + 5
    finally:
        for sock in uploads + idle + polls + streams:
            sock.close()

    # Closing them all leaves the server as it was.
    wait_for(
        lambda: requests.get(stack.base + "/health", timeout=ANSWER_WITHIN).ok,
        30,
        what="/health after the clients left",
    )
