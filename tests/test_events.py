"""Event streams: GET /tasks/{id}/events and GET /events (Server-Sent Events)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import events, logs, services
from tasks.models import Task, TaskLog

from . import tasks_in_states


def parse(text: str) -> list[dict]:
    """The events of a stream's text: {"id", "event", "data"} each; comments
    as {"comment": ...}."""
    parsed = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                event["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                event[name] = json.loads(value) if name == "data" else value
        parsed.append(event)
    return parsed


def read(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/event-stream"
    return parse(b"".join(response.streaming_content).decode())


@pytest.fixture
def fast_streams(task_settings):
    task_settings(EVENTS_POLL_SECONDS=0.02, EVENTS_KEEPALIVE_SECONDS=0.1, EVENTS_MAX_SECONDS=0.5)


def logged(owner, run_jobs, lines: int = 3) -> Task:
    task = run_jobs(
        services.submit_task, owner=owner, type_name="test.log", args={"lines": lines}
    ).task
    task.refresh_from_db()
    return task


def test_a_finished_tasks_stream_tells_everything_and_ends(api, owner, run_jobs, fast_streams):
    task = logged(owner, run_jobs)

    stream = read(api.get(f"/tasks/{task.pk}/events", HTTP_ACCEPT="text/event-stream"))

    assert stream[0] == {"retry": "1000"}
    kinds = [event["event"] for event in stream[1:]]
    assert kinds == ["log", "log", "log", "progress", "status"]
    assert [e["data"]["seq"] for e in stream[1:4]] == [1, 2, 3]
    assert stream[3]["data"]["message"] == "line 3 of attempt 1"
    assert stream[4]["data"] == {"task_id": task.pk, "percent": 100, "message": ""}
    assert stream[5]["data"]["status"] == "completed"
    assert stream[5]["data"]["finished"] is True
    ids = [event["id"] for event in stream[1:]]
    # Lines each have their own id; progress and status are one state, one id.
    assert len(set(ids[:3])) == 3
    assert ids[3] == ids[4] != ids[2]


def test_a_resumed_stream_gets_what_came_after_its_last_event(api, owner, run_jobs, fast_streams):
    task = logged(owner, run_jobs, lines=5)
    first = read(api.get(f"/tasks/{task.pk}/events"))
    second_line = first[2]
    assert second_line["data"]["seq"] == 2

    resumed = read(api.get(f"/tasks/{task.pk}/events", HTTP_LAST_EVENT_ID=second_line["id"]))

    assert [e["data"]["seq"] for e in resumed if e.get("event") == "log"] == [3, 4, 5]
    assert resumed[-1]["event"] == "status"
    assert resumed[-1]["data"]["status"] == "completed"

    # Resumed after the terminal event: nothing more, and the stream ends.
    last = read(api.get(f"/tasks/{task.pk}/events", HTTP_LAST_EVENT_ID=first[-1]["id"]))
    assert [e.get("event") for e in last[1:]] == []


def test_an_unfinished_tasks_stream_keeps_alive_and_ends_after_its_duration(
    api, owner, fast_streams
):
    task = tasks_in_states.queued(owner)

    stream = read(api.get(f"/tasks/{task.pk}/events"))

    assert [e.get("event") for e in stream[1:3]] == ["progress", "status"]
    assert stream[2]["data"]["status"] == "queued"
    assert {"comment": "keep-alive"} in stream[3:]
    assert all("event" not in e for e in stream[3:])


def test_progress_and_status_changes_become_events(owner, task_settings):
    task = tasks_in_states.in_progress(owner, "w")
    source = events.TaskEvents(task_id=task.pk, owner_id=owner.pk)

    assert [e.kind for e in source.poll()] == ["progress", "status"]
    assert source.poll() == []
    Task.objects.filter(pk=task.pk).update(progress=40, progress_message="almost half")
    changed = source.poll()
    assert [(e.kind, e.data["percent"]) for e in changed] == [("progress", 40)]
    Task.objects.filter(pk=task.pk).transition("cancelled")
    assert [(e.kind, e.data["status"]) for e in source.poll()] == [("status", "cancelled")]
    assert source.done


def test_all_my_tasks_events_from_now_on_and_resumed(owner, outsider, run_jobs):
    source = events.OwnerEvents(owner_id=owner.pk)
    assert source.poll() == []  # the start: nothing before it
    mine = logged(owner, run_jobs, lines=2)
    logged(outsider, run_jobs, lines=2)

    seen = source.poll()

    assert {e.data["task_id"] for e in seen} == {mine.pk}
    assert [e.kind for e in seen] == ["log", "log", "progress", "status"]
    assert seen[-1].data["status"] == "completed"
    assert source.poll() == []

    resumed = events.OwnerEvents(owner_id=owner.pk, cursor=events.Cursor.parse(seen[0].id))
    again = resumed.poll()
    # The log cursor trails recent lines (see the next test): the first
    # line may come again, the second surely does.
    assert [e.data.get("seq") for e in again if e.kind == "log"][-1] == 2
    assert again[-1].data["status"] == "completed"


def test_reading_a_users_changed_tasks_takes_the_owner_updated_index(owner):
    """A stream's poll reads the owner's tasks changed since its cursor from
    the (owner, updated_at) index, so its cost follows the changes, not how
    many tasks the user has."""
    # A history, and statistics that know it: on a near-empty table the
    # planner takes any index that starts with the owner.
    long_ago = timezone.now() - timedelta(days=30)
    Task.objects.bulk_create(
        Task(
            owner=owner,
            type="test.hold",
            timeout=60,
            status="completed",
            created_at=long_ago + timedelta(minutes=i),
            updated_at=long_ago + timedelta(minutes=i),
        )
        for i in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tasks_task" if connection.vendor == "postgresql" else "ANALYZE")
    tasks_in_states.queued(owner)
    source = events.OwnerEvents(owner_id=owner.pk)
    source.poll()
    with CaptureQueriesContext(connection) as captured:
        source.poll()
    reads = [q["sql"] for q in captured.captured_queries if 'FROM "tasks_task" ' in q["sql"]]
    assert len(reads) == 1, reads
    explain = "EXPLAIN QUERY PLAN" if connection.vendor == "sqlite" else "EXPLAIN"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"{explain} {reads[0]}")
        plan = "\n".join(str(row) for row in cursor.fetchall())
    assert "task_owner_updated" in plan, plan


def test_all_my_tasks_lines_committed_out_of_id_order_are_not_missed(owner, monkeypatch):
    task = tasks_in_states.queued(owner)
    source = events.OwnerEvents(owner_id=owner.pk)
    source.poll()
    base = source.cursor.log

    def line(pk: int, seq: int) -> None:
        TaskLog.objects.create(id=pk, task=task, seq=seq, attempt=1, message=f"line {seq}")

    line(base + 10, 1)
    assert [e.data["seq"] for e in source.poll() if e.kind == "log"] == [1]
    line(base + 5, 2)  # a lower id, committed later
    assert [e.data["seq"] for e in source.poll() if e.kind == "log"] == [2]
    assert [e for e in source.poll() if e.kind == "log"] == []
    # Once the slack has passed the cursor moves past both lines.
    monkeypatch.setattr(events, "LOG_SLACK_SECONDS", 0.0)
    source.poll()
    assert source.cursor.log == base + 10


def test_the_all_tasks_stream_over_http(api, owner, fast_streams):
    stream = read(api.get("/events"))
    assert stream[0] == {"retry": "1000"}
    assert {"comment": "keep-alive"} in stream


def test_a_session_cookie_is_enough(owner, fast_streams):
    browser = Client()
    browser.force_login(owner)
    task = tasks_in_states.queued(owner)
    assert browser.get(f"/tasks/{task.pk}/events").status_code == 200
    assert browser.get("/events").status_code == 200


@pytest.mark.parametrize("bad", ["x", "1", "1-", "-1", "1-2-3", "9" * 30 + "-1"])
def test_a_bad_last_event_id_is_a_400(api, owner, bad):
    task = tasks_in_states.queued(owner)
    for path in (f"/tasks/{task.pk}/events", "/events"):
        response = api.get(path, HTTP_LAST_EVENT_ID=bad, HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert "Last-Event-ID" in response.json()["fields"]


def test_a_cursor_from_the_future_is_refused_or_read_from_now(api, owner, run_jobs, fast_streams):
    task = tasks_in_states.queued(owner)
    ahead = events._now_micros() + 3600 * 1_000_000  # no version this server made
    for path in (f"/tasks/{task.pk}/events", "/events"):
        response = api.get(path, HTTP_LAST_EVENT_ID=f"{ahead}-0")
        assert response.status_code == 400
        assert "Last-Event-ID" in response.json()["fields"]

    # A second ahead (another host's clock): changes from now on still arrive.
    soon = events._now_micros() + 1_000_000
    Task.objects.filter(pk=task.pk).update(progress=40, updated_at=timezone.now())
    stream = read(api.get("/events", HTTP_LAST_EVENT_ID=f"{soon}-0"))
    assert {"task_id": task.pk, "percent": 40, "message": ""} in [e.get("data") for e in stream]


def test_another_users_task_unknown_ids_and_no_credentials(api, outsider_api, owner, client):
    task = tasks_in_states.queued(owner)

    theirs = outsider_api.get(f"/tasks/{task.pk}/events", HTTP_ACCEPT="text/event-stream")
    assert theirs.status_code == 404
    assert theirs.json() == {"error": "Task not found", "code": "not_found"}
    assert api.get("/tasks/999999/events").status_code == 404
    assert api.get("/tasks/abc/events").status_code == 400
    assert client.get(f"/tasks/{task.pk}/events").status_code == 401
    assert client.get("/events").status_code == 401
    bad = client.get("/events", HTTP_AUTHORIZATION="Bearer nonsense")
    assert bad.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_changes_wake_the_owners_streams(owner, outsider):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; elsewhere streams poll")
    listener = events.Wakeups()
    listener.start()
    try:
        assert listener.listening.wait(10)
        mine, theirs = listener.subscribe(owner.pk), listener.subscribe(outsider.pk)

        task = tasks_in_states.queued(owner)  # a new task
        assert mine.wait(10)
        mine.clear()
        Task.objects.filter(pk=task.pk).update(progress=5)
        assert mine.wait(10)
        mine.clear()
        line = logs.Line(at=timezone.now(), level="INFO", attempt=1, message="hello")
        logs.append(task_id=task.pk, lines=[line])
        assert mine.wait(10)
        mine.clear()
        # A lease renewal is no event.
        Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now())
        assert not mine.wait(1)
        assert not theirs.is_set()
    finally:
        listener.stop()


def listening() -> events.Wakeups:
    """A listener that says it listens; never started: only its flags are used."""
    listener = events.Wakeups()
    listener.listening.set()
    return listener


def counting_polls(source) -> list[int]:
    """The polls of `source` from now on, one item each."""
    polls: list[int] = []
    original = source.poll

    def counted():
        polls.append(1)
        return original()

    source.poll = counted
    return polls


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_one_watcher_wakes_the_owners_streams(owner, outsider, task_settings):
    if connection.vendor != "sqlite":
        pytest.skip("the watcher serves databases that cannot notify; PostgreSQL listens")
    task_settings(EVENTS_POLL_SECONDS=0.02)
    task = tasks_in_states.queued(owner)
    watcher = events.PollingWakeups()
    mine, theirs = watcher.subscribe(owner.pk), watcher.subscribe(outsider.pk)
    watcher.start()
    try:
        assert watcher.listening.wait(10)
        mine.clear()  # a first look may wake for the task made just before
        # Nothing committed: no wake-up, however long.
        assert not mine.wait(0.3)
        Task.objects.filter(pk=task.pk).update(progress=5, updated_at=timezone.now())
        assert mine.wait(10)
        # The look-back of a few seconds may wake it again; then it settles.
        deadline = time.monotonic() + 10
        while mine.wait(0.5) and time.monotonic() < deadline:
            mine.clear()
        assert not mine.is_set()
        line = logs.Line(at=timezone.now(), level="INFO", attempt=1, message="hello")
        logs.append(task_id=task.pk, lines=[line])
        assert mine.wait(10)
        assert not theirs.is_set()
    finally:
        watcher.stop()
    assert not watcher.is_alive()


def test_an_idle_listening_stream_sends_keep_alives_without_polling(owner, task_settings):
    """While the listener listens and nothing wakes a stream, there is
    nothing to read: a keep-alive is all it sends."""
    task_settings(EVENTS_POLL_SECONDS=0.001, EVENTS_KEEPALIVE_SECONDS=0.05, EVENTS_MAX_SECONDS=0.4)
    task = tasks_in_states.queued(owner)
    listener = listening()
    source = events.TaskEvents(task_id=task.pk, owner_id=owner.pk)
    polls = counting_polls(source)
    stream = parse("".join(events.stream(source, listener=listener)))

    assert [e.get("event") for e in stream[1:3]] == ["progress", "status"]
    assert [e.get("comment") for e in stream[3:]].count("keep-alive") >= 3
    assert len(polls) == 1
    # Without a listener the same stream polls all along.
    source = events.TaskEvents(task_id=task.pk, owner_id=owner.pk)
    polls = counting_polls(source)
    "".join(events.stream(source, listener=False))
    assert len(polls) > 10


def test_a_listening_stream_sleeps_until_woken(owner, fast_streams, task_settings):
    """With a listener that listens, a stream polls again on a wake-up, not
    every EVENTS_POLL_SECONDS."""
    task_settings(EVENTS_POLL_SECONDS=0.001, EVENTS_KEEPALIVE_SECONDS=60)
    task = tasks_in_states.queued(owner)
    listener = listening()
    source = events.TaskEvents(task_id=task.pk, owner_id=owner.pk)
    polls = counting_polls(source)
    clock = [0.0]
    text = events.stream(source, clock=lambda: clock[0], listener=listener)
    assert next(text).startswith("retry:")
    assert "event: progress" in next(text)
    assert "event: status" in next(text)
    # Now the stream waits on its flag; wake it after a change.
    Task.objects.filter(pk=task.pk).transition("cancelled")
    listener.wake(owner.pk)
    assert "event: status" in next(text)
    assert list(text) == []  # terminal: the stream ends
    assert len(polls) == 2


@pytest.mark.django_db(transaction=True)
def test_a_stream_holds_no_database_connection_between_polls(owner, task_settings):
    task_settings(EVENTS_POLL_SECONDS=0.01, EVENTS_KEEPALIVE_SECONDS=60, EVENTS_MAX_SECONDS=60)
    task = tasks_in_states.queued(owner)
    text = events.stream(events.TaskEvents(task_id=task.pk, owner_id=owner.pk), listener=False)
    next(text)  # retry
    assert "event: progress" in next(text)  # a poll ran
    assert "event: status" in next(text)
    assert connection.connection is None
    Task.objects.filter(pk=task.pk).update(progress=7)
    assert "event: progress" in next(text)  # the next poll found the change
    assert connection.connection is None
    text.close()


@pytest.mark.django_db(transaction=True)
def test_the_async_driver_streams_the_same_events(owner, run_jobs, fast_streams):
    import asyncio

    task = logged(owner, run_jobs, lines=2)

    async def collect() -> str:
        source = events.TaskEvents(task_id=task.pk, owner_id=owner.pk)
        return "".join([chunk async for chunk in events.astream(source)])

    stream = parse(asyncio.run(collect()))

    assert [e.get("event") for e in stream] == [None, "log", "log", "progress", "status"]
    assert stream[-1]["data"]["status"] == "completed"


def test_neither_accept_nor_format_turns_a_stream_into_an_error(api, owner, fast_streams):
    task = tasks_in_states.queued(owner)
    for query in ("", "?format=AAA", "?format=json"):
        for accept in ("text/event-stream", "application/json", "image/png"):
            response = api.get(f"/tasks/{task.pk}/events{query}", HTTP_ACCEPT=accept)
            assert read(response)[0] == {"retry": "1000"}
