"""Task log lines: written through ctx.log, buffered, stored capped, paged by
GET /tasks/{id}/logs, shown on the admin task page."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks import logs, services
from tasks.context import TaskContext
from tasks.models import Status, Task, TaskLog

from . import tasks_in_states


def submit(owner, run_jobs, **args) -> Task:
    task = run_jobs(services.submit_task, owner=owner, type_name="test.log", args=args).task
    task.refresh_from_db()
    return task


def stored(task: Task) -> list[tuple[int, str]]:
    return list(TaskLog.objects.filter(task=task).order_by("seq").values_list("seq", "message"))


def test_lines_are_stored_with_level_time_and_attempt(owner, run_jobs):
    task = submit(owner, run_jobs, lines=3)

    assert task.status == Status.COMPLETED
    lines = list(TaskLog.objects.filter(task=task).order_by("seq"))
    assert [(ln.seq, ln.message) for ln in lines] == [
        (1, "line 1 of attempt 1"),
        (2, "line 2 of attempt 1"),
        (3, "line 3 of attempt 1"),
    ]
    assert {ln.level for ln in lines} == {"INFO"}
    assert {ln.attempt for ln in lines} == {1}
    assert all(task.created_at <= ln.at <= task.finished_at for ln in lines)


def test_lines_of_a_failing_attempt_are_kept_and_the_retry_continues_the_numbering(
    owner, run_jobs, task_settings
):
    task_settings(RETRY_BACKOFF_BASE=0.0, RETRY_BACKOFF_MAX=0.0)
    task = run_jobs(
        services.submit_task,
        owner=owner,
        type_name="test.log",
        args={"lines": 2, "fail": True},
        max_retries=1,
    ).task
    from tasks import worker

    worker.run_now(task.pk)  # the retry, due at once
    task.refresh_from_db()

    assert task.status == Status.FAILED
    assert stored(task) == [
        (1, "line 1 of attempt 1"),
        (2, "line 2 of attempt 1"),
        (3, "line 1 of attempt 2"),
        (4, "line 2 of attempt 2"),
    ]


def test_writes_are_buffered(owner, task_settings):
    task_settings(PROGRESS_INTERVAL=60.0)
    task = tasks_in_states.in_progress(owner, "w")
    ctx = TaskContext(task_id=task.pk, attempt=task.attempts, owner_id=owner.pk)

    with CaptureQueriesContext(connection) as first:
        ctx.log("first")
    with CaptureQueriesContext(connection) as rest:
        for n in range(50):
            ctx.log("more %s", n, level=logging.WARNING)
    assert len(first.captured_queries) > 0  # the first line goes at once
    assert len(rest.captured_queries) == 0  # the rest wait for the interval or the end
    assert TaskLog.objects.filter(task=task).count() == 1

    ctx.flush_logs()
    assert TaskLog.objects.filter(task=task).count() == 51
    assert TaskLog.objects.get(task=task, seq=51).level == "WARNING"


def test_a_burst_is_stored_in_batches(owner, task_settings):
    task_settings(PROGRESS_INTERVAL=60.0)
    task = tasks_in_states.in_progress(owner, "w")
    ctx = TaskContext(task_id=task.pk, attempt=task.attempts, owner_id=owner.pk)

    for n in range(250):
        ctx.log("n=%s", n)

    # The first line, then a write per 100 lines; the last 49 wait.
    assert TaskLog.objects.filter(task=task).count() == 201


def test_the_oldest_lines_go_first_leaving_a_marker(owner, run_jobs, task_settings):
    task_settings(MAX_LOG_LINES=10)
    task = submit(owner, run_jobs, lines=25)

    lines = stored(task)
    assert len(lines) == 10
    assert lines[0] == (16, "16 earlier lines dropped (this task keeps its last 10 lines).")
    assert lines[1:] == [(n, f"line {n} of attempt 1") for n in range(17, 26)]
    assert TaskLog.objects.get(task=task, seq=16).level == logs.MARKER_LEVEL


def test_the_byte_cap_drops_lines_too(owner, task_settings):
    task_settings(MAX_LOG_BYTES=1000)
    task = tasks_in_states.in_progress(owner, "w")
    line = logs.Line(at=task.created_at, level="INFO", attempt=1, message="x" * 300)

    logs.append(task_id=task.pk, lines=[line] * 5)

    kept = list(TaskLog.objects.filter(task=task).order_by("seq"))
    assert sum(ln.size for ln in kept) <= 1000
    assert kept[0].level == logs.MARKER_LEVEL
    # Three lines of 300 bytes fit beside the marker, which takes seq 2.
    assert [ln.seq for ln in kept[1:]] == [3, 4, 5]
    assert kept[0].seq == 2


def test_a_huge_line_is_cut(owner):
    task = tasks_in_states.in_progress(owner, "w")
    line = logs.Line(at=task.created_at, level="INFO", attempt=1, message="é" * 10_000)

    logs.append(task_id=task.pk, lines=[line])

    stored_line = TaskLog.objects.get(task=task)
    assert len(stored_line.message) == logs.MAX_LINE_CHARS
    assert stored_line.size == len(stored_line.message.encode())


def test_the_demo_logs_a_line_per_ten_percent(owner, run_jobs):
    task = run_jobs(services.submit_task, owner=owner, type_name="demo", args={"seconds": 0.5}).task
    task.refresh_from_db()

    assert task.status == Status.COMPLETED
    messages = [message for _, message in stored(task)]
    assert len(messages) == 10
    assert messages[0].startswith("10% done")
    assert messages[-1].startswith("100% done")


# --- GET /tasks/{id}/logs ---------------------------------------------------


def test_the_api_pages_lines_after_a_seq(api, owner, run_jobs):
    task = submit(owner, run_jobs, lines=5)

    first = api.get(f"/tasks/{task.pk}/logs", {"limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert [ln["seq"] for ln in body["results"]] == [1, 2]
    assert body["results"][0]["message"] == "line 1 of attempt 1"
    assert body["results"][0]["level"] == "INFO"
    assert body["results"][0]["attempt"] == 1
    assert body["results"][0]["at"]
    assert body["has_more"] is True
    assert body["finished"] is True

    rest = api.get(f"/tasks/{task.pk}/logs/", {"after": body["next_after"]}).json()
    assert [ln["seq"] for ln in rest["results"]] == [3, 4, 5]
    assert rest["has_more"] is False
    assert rest["next_after"] == 5

    empty = api.get(f"/tasks/{task.pk}/logs", {"after": 5}).json()
    assert empty["results"] == []
    assert empty["next_after"] == 5


def test_a_task_without_lines_has_an_empty_log(api, owner):
    task = tasks_in_states.queued(owner)
    body = api.get(f"/tasks/{task.pk}/logs").json()
    assert body == {
        "task_id": task.pk,
        "results": [],
        "next_after": 0,
        "has_more": False,
        "finished": False,
    }


@pytest.mark.parametrize(
    "query", ["after=-1", "after=x", "after=1.5", "after=99999999999999999999", "limit=0"]
)
def test_a_bad_after_or_limit_is_a_400(api, owner, query):
    task = tasks_in_states.queued(owner)
    response = api.get(f"/tasks/{task.pk}/logs?{query}")
    assert response.status_code == 400
    assert response.json()["error"].startswith("Invalid input")


def test_another_users_task_and_unknown_ids_are_404(api, outsider_api, owner, run_jobs):
    task = submit(owner, run_jobs, lines=1)

    theirs = outsider_api.get(f"/tasks/{task.pk}/logs")
    assert theirs.status_code == 404
    assert theirs.json() == {"error": "Task not found", "code": "not_found"}
    assert api.get("/tasks/999999/logs").status_code == 404
    assert api.get("/tasks/abc/logs").status_code == 400


def test_logs_need_authentication(client, owner, run_jobs):
    task = submit(owner, run_jobs, lines=1)
    assert client.get(f"/tasks/{task.pk}/logs").status_code == 401
    bad = client.get(f"/tasks/{task.pk}/logs", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert bad.status_code == 401


def test_the_admin_task_page_shows_the_log_tail(admin_client, owner, run_jobs):
    task = submit(owner, run_jobs, lines=3)
    TaskLog.objects.filter(task=task, seq=2).update(message="<b>not bold</b>")

    page = admin_client.get(f"/admin/tasks/task/{task.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Last log lines" in html
    assert "line 3 of attempt 1" in html
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html


def test_lines_a_failed_write_could_not_store_are_kept_for_the_next(owner, monkeypatch):
    from tasks import lifecycle

    task = tasks_in_states.in_progress(owner, "w")
    ctx = TaskContext(task_id=task.pk, attempt=task.attempts, owner_id=owner.pk)
    real = lifecycle.record_logs

    def down(**kwargs):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(lifecycle, "record_logs", down)
    ctx.log("first")  # the write fails; the task goes on
    ctx._log_buffer.append(logs.Line(at=task.created_at, level="INFO", attempt=1, message="2nd"))
    monkeypatch.setattr(lifecycle, "record_logs", real)
    ctx.flush_logs()

    assert stored(task) == [(1, "first"), (2, "2nd")]
