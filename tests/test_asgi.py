"""The ASGI application of `make serve` (config.asgi), in process through
httpx: `?wait=` waits on the event loop and answers like the WSGI path,
bodies are capped before Django buffers them, chunked bodies reach the view
whole, event streams are sent as they come."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from rest_framework_simplejwt.tokens import RefreshToken

from tasks.models import Status, Task
from tests import tasks_in_states

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app():
    from config.asgi import application

    return application


def bearer(user) -> dict[str, str]:
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_wait_answers_after_n_seconds_with_the_current_state(app, owner):
    task = tasks_in_states.queued(owner)
    started = time.monotonic()

    response = call(app, "GET", f"/tasks/{task.pk}?wait=1", headers=bearer(owner))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    assert response.json()["id"] == task.pk
    assert time.monotonic() - started >= 1
    # The middleware's headers reach the answer made after the wait.
    assert response.headers["X-Request-ID"]
    assert response.headers["Content-Type"] == "application/json"


def test_wait_returns_once_the_task_finishes(app, owner):
    task = tasks_in_states.in_progress(owner)

    def finish():
        time.sleep(0.5)
        Task.objects.filter(pk=task.pk).transition(Status.COMPLETED, output={"ok": 1})

    finisher = threading.Thread(target=finish)
    finisher.start()
    started = time.monotonic()
    response = call(app, "GET", f"/tasks/{task.pk}?wait=30", headers=bearer(owner))
    finisher.join()

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["output"] == {"ok": 1}
    assert time.monotonic() - started < 10


def test_a_task_deleted_during_the_wait_is_404_with_a_code(app, owner):
    task = tasks_in_states.queued(owner)

    def delete():
        time.sleep(0.3)
        Task.objects.filter(pk=task.pk).delete()

    deleter = threading.Thread(target=delete)
    deleter.start()
    response = call(app, "GET", f"/tasks/{task.pk}?wait=5", headers=bearer(owner))
    deleter.join()

    assert response.status_code == 404
    assert response.json() == {"error": "Task not found", "code": "not_found"}


@pytest.mark.parametrize(
    ("query", "status"), [("?wait=31", 400), ("?wait=abc", 400), ("?wait=1.5", 400)]
)
def test_a_bad_wait_is_a_400_with_a_code(app, owner, query, status):
    task = tasks_in_states.queued(owner)

    response = call(app, "GET", f"/tasks/{task.pk}{query}", headers=bearer(owner))

    assert response.status_code == status
    assert response.json()["code"] == "invalid"
    assert "wait" in response.json()["fields"]


def test_waits_on_another_users_task_or_a_bad_token_fail_at_once(app, owner, outsider):
    task = tasks_in_states.queued(owner)
    started = time.monotonic()

    theirs = call(app, "GET", f"/tasks/{task.pk}?wait=30", headers=bearer(outsider))
    unknown = call(app, "GET", "/tasks/999999?wait=30", headers=bearer(owner))
    bad_token = call(
        app, "GET", f"/tasks/{task.pk}?wait=30", headers={"Authorization": "Bearer nope"}
    )

    assert (theirs.status_code, theirs.json()["code"]) == (404, "not_found")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert bad_token.status_code == 401 and bad_token.json()["code"]
    assert time.monotonic() - started < 10


def test_a_body_over_the_limit_is_refused_before_it_is_read(app, owner, settings):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    big = b'{"type": "wordcount", "args": {"text": "' + b"a" * limit + b'"}}'

    sized = call(app, "POST", "/tasks", content=big, headers=bearer(owner))

    async def chunks():
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    chunked = call(app, "POST", "/tasks", content=chunks(), headers=bearer(owner))

    for response in (sized, chunked):
        assert response.status_code == 413
        assert response.json()["code"] == "too_large"
        assert "MAX_REQUEST_BYTES" in response.json()["error"]
    assert not Task.objects.exists()


def test_a_chunked_body_reaches_the_view_whole(app, owner):
    body = json.dumps({"type": "wordcount", "args": {"text": "one two"}}).encode()

    async def chunks():
        yield body[:10]
        yield body[10:]

    response = call(
        app,
        "POST",
        "/tasks",
        content=chunks(),
        headers={**bearer(owner), "Content-Type": "application/json"},
    )

    assert response.status_code == 202, response.text
    # The body, not an empty one (which would start the demo task).
    assert Task.objects.get().type == "wordcount"


def test_bad_json_is_a_400_with_a_code(app, owner):
    response = call(
        app,
        "POST",
        "/tasks",
        content=b'{"type": ',
        headers={**bearer(owner), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"]
    assert not Task.objects.exists()


def test_an_event_stream_is_sent_from_the_event_loop(app, owner, settings):
    """Over ASGI messages (httpx's transport would hold the body back until
    the end): the first events arrive while the stream is open, and a change
    made after them arrives on the same stream, which then ends."""
    settings.TASKS = {**settings.TASKS, "EVENTS_POLL_SECONDS": 0.05, "EVENTS_MAX_SECONDS": 10}
    task = tasks_in_states.in_progress(owner)
    token = bearer(owner)["Authorization"].encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/tasks/{task.pk}/events",
        "raw_path": f"/tasks/{task.pk}/events".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", token)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    received: list[str] = []
    finished_at: list[float] = []

    def finish():
        Task.objects.filter(pk=task.pk).transition(Status.COMPLETED, output={})

    async def drive() -> int:
        requests = [{"type": "http.request", "body": b"", "more_body": False}]
        status = 0

        async def receive():
            if requests:
                return requests.pop()
            await asyncio.Event().wait()  # no disconnect: the client stays

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message.get("body"):
                received.append(message["body"].decode())
                text = "".join(received)
                if '"in_progress"' in text and not finished_at:
                    finished_at.append(time.monotonic())
                    await sync_to_async(finish, thread_sensitive=False)()

        await asyncio.wait_for(app(scope, receive, send), 20)
        return status

    started = time.monotonic()
    status = asyncio.run(drive())
    text = "".join(received)

    assert status == 200
    assert text.startswith("retry: 1000")
    # The change was made after the first events had been sent, on the open stream.
    assert finished_at and finished_at[0] - started < 5
    assert text.index('"status":"in_progress"') < text.index('"status":"completed"')
    # It ended after the terminal status, well before its maximum length.
    assert time.monotonic() - started < 8


def test_a_failing_wait_is_the_projects_json_500(app, owner, monkeypatch):
    task = tasks_in_states.queued(owner)

    async def broken(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("tasks.selectors.atask_of_when_finished", broken)

    response = call(app, "GET", f"/tasks/{task.pk}?wait=5", headers=bearer(owner))

    assert response.status_code == 500
    assert response.json()["code"]
    assert "the database went away" not in response.text
