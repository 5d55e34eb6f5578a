"""What a task function receives: progress (rate-limited), cancellation checks
and sleeps that stop once the attempt is cancelled or taken over."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import context, maintenance, services
from tasks.context import TaskCancelled, TaskContext
from tasks.models import Task

from . import tasks_in_states


def running(owner) -> Task:
    return tasks_in_states.in_progress(owner, "w")


def context_for(task: Task) -> TaskContext:
    return TaskContext(task_id=task.pk, attempt=task.attempts, owner_id=task.owner_id)


def test_progress_writes_are_rate_limited(owner, task_settings):
    task = running(owner)
    task_settings(PROGRESS_INTERVAL=60.0)
    ctx = context_for(task)

    with CaptureQueriesContext(connection) as queries:
        for i in range(1000):
            ctx.progress(i / 10, f"step {i}")
            ctx.check_cancelled()
        ctx.flush_progress()

    # One write as the loop starts, one flush of the last value at the end,
    # and one read for the first cancellation check.
    assert len(queries.captured_queries) == 3
    task.refresh_from_db()
    assert task.progress == 99
    assert task.progress_message == "step 999"


def test_progress_is_visible_while_the_task_runs(api, owner):
    task = running(owner)
    ctx = context_for(task)

    ctx.progress(42.7, "almost half")

    status = api.get(f"/tasks/status/{task.pk}").json()
    detail = api.get(f"/tasks/{task.pk}").json()
    assert status["progress"] == 42
    assert status["progress_message"] == "almost half"
    assert detail["progress"] == {"percent": 42, "message": "almost half"}
    task.refresh_from_db()
    assert (task.progress, task.progress_message) == (42, "almost half")


def test_progress_is_clamped_to_0_100(owner):
    task = running(owner)
    ctx = context_for(task)

    ctx.progress(250)
    task.refresh_from_db()
    assert task.progress == 100
    ctx.progress(-3)
    task.refresh_from_db()
    assert task.progress == 0


def test_a_cancel_request_stops_the_task_at_its_next_check(owner):
    task = running(owner)
    ctx = context_for(task)
    ctx.check_cancelled()

    services.cancel_task(task=task)

    with pytest.raises(TaskCancelled, match="Cancelled on request"):
        ctx.check_cancelled()


def test_an_attempt_taken_over_raises_at_the_next_call(owner):
    task = running(owner)
    ctx = context_for(task)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    maintenance.reap_expired_leases()

    # The refused write is what tells the context its attempt is gone.
    ctx.progress(80, "late")
    with pytest.raises(TaskCancelled, match="no longer current"):
        ctx.progress(90)
    with pytest.raises(TaskCancelled):
        ctx.sleep(0)

    task.refresh_from_db()
    assert task.progress == 0


def test_sleeping_in_a_task_does_not_spin_on_the_database(owner, task_settings):
    task = running(owner)
    # No rate limit at all: every check reads the row, so only the slicing
    # of the sleep keeps the number of reads down.
    task_settings(PROGRESS_INTERVAL=0.0)
    ctx = context_for(task)

    with CaptureQueriesContext(connection) as queries:
        ctx.sleep(0.3)

    assert 1 <= len(queries.captured_queries) <= 0.3 / context.SLEEP_SLICE + 2


def test_sleeping_stops_early_once_cancelled(owner, task_settings):
    task = running(owner)
    task_settings(PROGRESS_INTERVAL=0.0)
    ctx = context_for(task)
    services.cancel_task(task=task)

    with pytest.raises(TaskCancelled):
        # Would take an hour if the cancellation went unnoticed.
        ctx.sleep(3600)
