"""Event streams against a real web server and a real qcluster: a stream sees
a task's progress and its end, a resumed stream misses nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from .harness import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {
    "TASK_EVENTS_POLL_SECONDS": "0.1",
    "TASK_EVENTS_KEEPALIVE_SECONDS": "1",
    "TASK_EVENTS_MAX_SECONDS": "30",
    "TASK_PROGRESS_INTERVAL": "0.1",
}


@pytest.fixture
def live(make_stack) -> Stack:
    return make_stack(FAST)


def events_of(response: requests.Response) -> Iterator[dict]:
    """Parse a text/event-stream response as it arrives: {"id", "event", "data"}
    per event, {"comment": ...} per comment."""
    event: dict = {}
    for raw in response.iter_lines(decode_unicode=True):
        if raw == "":
            if event:
                yield event
            event = {}
        elif raw.startswith(":"):
            event["comment"] = raw[1:].strip()
        else:
            name, _, value = raw.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


def open_stream(stack: Stack, session, path: str, last_event_id: str | None = None):
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    response = session.get(f"{stack.base}{path}", headers=headers, stream=True, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/event-stream"
    return response


def test_a_stream_sees_progress_and_the_end_of_a_real_task(live):
    session = live.login()
    task_id = live.submit(session, "demo", {"seconds": 3})
    started = time.monotonic()

    with open_stream(live, session, f"/tasks/{task_id}/events") as response:
        seen = [e for e in events_of(response) if "event" in e]

    # The stream ended by itself after the terminal event, well before its maximum.
    assert time.monotonic() - started < 25
    assert seen[-1]["event"] == "status"
    assert seen[-1]["data"]["status"] == "completed"
    percents = [e["data"]["percent"] for e in seen if e["event"] == "progress"]
    assert any(0 < p < 100 for p in percents), percents
    assert percents == sorted(percents)
    assert percents[-1] == 100
    statuses = [e["data"]["status"] for e in seen if e["event"] == "status"]
    assert "in_progress" in statuses
    lines = [e["data"] for e in seen if e["event"] == "log"]
    assert [line["seq"] for line in lines] == list(range(1, 11))
    assert lines[-1]["message"].startswith("100% done")


def test_a_resumed_stream_misses_nothing(live):
    session = live.login()
    task_id = live.submit(session, "demo", {"seconds": 4})
    path = f"/tasks/{task_id}/events"

    before: list[dict] = []
    with open_stream(live, session, path) as response:
        for event in events_of(response):
            if "event" in event:
                before.append(event)
            if sum(1 for e in before if e["event"] == "log") == 3:
                break  # the client goes away mid-task
    assert before[-1]["data"]["task_id"] == task_id

    with open_stream(live, session, path, last_event_id=before[-1]["id"]) as response:
        after = [e for e in events_of(response) if "event" in e]

    logs = [e["data"]["seq"] for e in before + after if e["event"] == "log"]
    assert logs == list(range(1, 11)), "every line exactly once across the two streams"
    assert after[-1]["event"] == "status"
    assert after[-1]["data"]["status"] == "completed"
    assert after[-1]["data"]["task_id"] == task_id


def test_the_stream_of_all_my_tasks_follows_a_new_task(live):
    session = live.login()
    other = live.login("bob")
    with open_stream(live, session, "/events") as response:
        task_id = live.submit(session, "demo", {"seconds": 1})
        theirs = live.submit(other, "demo", {"seconds": 1})
        seen: list[dict] = []
        for event in events_of(response):
            if "event" not in event:
                continue
            seen.append(event)
            if event["event"] == "status" and event["data"]["status"] == "completed":
                break

    assert {e["data"]["task_id"] for e in seen} == {task_id}
    assert theirs != task_id
    assert [e["data"]["seq"] for e in seen if e["event"] == "log"] == list(range(1, 11))
    assert seen[-1]["data"]["task_id"] == task_id


def test_on_postgresql_streams_wake_on_notifications_not_polls(make_stack):
    # Polls every 30 s and a keep-alive every 30 s: only notifications can
    # bring the events of a 2-second task within seconds.
    stack = make_stack(
        {**FAST, "TASK_EVENTS_POLL_SECONDS": "30", "TASK_EVENTS_KEEPALIVE_SECONDS": "30"}
    )
    if not stack.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; elsewhere streams poll")
    session = stack.login()
    task_id = stack.submit(session, "demo", {"seconds": 2})
    started = time.monotonic()

    with open_stream(stack, session, f"/tasks/{task_id}/events") as response:
        seen = [e for e in events_of(response) if "event" in e]

    assert time.monotonic() - started < 15
    assert seen[-1]["data"]["status"] == "completed"
    assert len([e for e in seen if e["event"] == "progress"]) >= 3
    assert [e["data"]["seq"] for e in seen if e["event"] == "log"] == list(range(1, 11))
