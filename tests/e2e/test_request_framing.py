"""Request framing on the servers the README offers, over raw sockets:
`make run`'s development server and `make serve`'s gunicorn, with uvicorn
workers (WEB_SERVER=asgi, the default) or gthread ones. A body cut short of
its Content-Length, or chunks a server cannot decode, never reach a view: the
answer is a JSON 4xx (or, from uvicorn, which takes a client's half-close for
a close, no answer) and no task is created."""

from __future__ import annotations

import json
import socket

import pytest

from .harness import HTTP_TIMEOUT, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASK = b'{"type": "wordcount", "args": {"text": "framed"}}'


class RunserverStack(Stack):
    """The stack with `make run`'s web server (Procfile: runserver --noreload)."""

    def start_web(self) -> None:
        self.web = self.spawn(
            "web", "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"
        )
        wait_for(self._web_up, 60, what="the development server")


@pytest.fixture(params=["runserver", "gthread", "asgi"], scope="module")
def server(request, tmp_path_factory):
    kind = request.param
    if kind == "runserver":
        stack = RunserverStack(tmp_path_factory.mktemp(kind), web_workers=2)
    else:
        stack = Stack(tmp_path_factory.mktemp(kind), web_workers=2, worker_class=kind)
    try:
        stack.start(("alice",), cluster=False)
        token = stack.login("alice").headers["Authorization"]
        yield kind, stack, token
    finally:
        stack.stop()


def exchange(stack: Stack, head: bytes, body: bytes = b"", *, half_close: bool = True) -> bytes:
    """Send raw bytes on a new connection, half-close it, read until the server closes."""
    with socket.create_connection(("127.0.0.1", stack.port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def request_head(token: str, *headers: str) -> bytes:
    lines = [
        "POST /tasks HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: {token}",
        "Content-Type: application/json",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def dechunk(body: bytes) -> bytes:
    data = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        if int(size, 16) == 0:
            break
        data, body = data + body[: int(size, 16)], body[int(size, 16) + 2 :]
    return data


def responses(raw: bytes) -> list[tuple[int, dict]]:
    """The (status, JSON body) of every HTTP response in `raw`."""
    found = []
    for part in raw.split(b"HTTP/1.1 ")[1:]:
        status = int(part[:3])
        head, _, body = part.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        found.append((status, json.loads(body) if body.strip() else {}))
    return found


def tasks(stack: Stack) -> int:
    return stack.db("SELECT COUNT(*) FROM tasks_task")[0][0]


def test_a_body_shorter_than_its_content_length_is_refused(server):
    kind, stack, token = server
    before = tasks(stack)
    # A whole JSON document, but 40 bytes short of what the header promised.
    raw = exchange(stack, request_head(token, f"Content-Length: {len(TASK) + 40}"), TASK)

    if kind == "asgi":
        # uvicorn takes the half-close for a close: the request was never
        # complete, so Django never saw it.
        assert raw == b"", raw
    else:
        [(status, body)] = responses(raw)
        assert status == 400, raw
        assert "shorter than its Content-Length" in body["error"]
    assert tasks(stack) == before


def test_a_complete_body_is_accepted(server):
    _kind, stack, token = server
    before = tasks(stack)
    # The server closes after its answer; the client does not half-close
    # (uvicorn would take that for a close and drop the answer).
    raw = exchange(
        stack,
        request_head(token, f"Content-Length: {len(TASK)}", "Connection: close"),
        TASK,
        half_close=False,
    )

    [(status, body)] = responses(raw)
    assert status == 202, raw
    assert body["task_id"]
    assert tasks(stack) == before + 1


def chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)


def test_a_chunked_body_is_decoded_or_refused_never_misread(server):
    kind, stack, token = server
    before = tasks(stack)
    # The chunks hold a second request: a server that does not decode them
    # must not read it as one.
    smuggled = b"GET /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + token.encode()
    smuggled += b"\r\n\r\n"
    body = TASK[:-1] + b', "x": "' + smuggled.replace(b"\r\n", b" ") + b'"}'
    raw = exchange(
        stack,
        request_head(token, "Transfer-Encoding: chunked", "Connection: close"),
        chunked(body),
        half_close=False,
    )

    answers = responses(raw)
    assert len(answers) == 1, raw
    [(status, answer)] = answers
    if kind != "runserver":  # decodes chunked bodies itself
        assert status == 400, raw  # the decoded body reached the view: "x" is no field
        assert "x" in str(answer)
    else:
        assert status == 411, raw
        assert "Content-Length" in answer["error"]
    assert tasks(stack) == before


def test_chunks_a_server_cannot_decode_never_become_a_second_request(server):
    kind, stack, token = server
    before = tasks(stack)
    raw = exchange(
        stack,
        request_head(token, "Transfer-Encoding: chunked"),
        chunked(TASK) + request_head(token, f"Content-Length: {len(TASK)}") + TASK,
        half_close=False,
    )

    answers = responses(raw)
    if kind != "runserver":  # two well-framed requests on one connection: two tasks
        assert [status for status, _ in answers] == [202, 202], raw
        assert tasks(stack) == before + 2
    else:
        # Refused, and the connection closed: what followed was never read.
        assert [status for status, _ in answers] == [411], raw
        assert tasks(stack) == before


def test_content_length_and_transfer_encoding_together_are_refused(server):
    _kind, stack, token = server
    before = tasks(stack)
    raw = exchange(
        stack,
        request_head(
            token, f"Content-Length: {len(TASK)}", "Transfer-Encoding: chunked", "Connection: close"
        ),
        chunked(TASK),
        half_close=False,
    )

    status = int(raw.split(b" ", 2)[1])
    assert 400 <= status < 500, raw
    assert tasks(stack) == before
