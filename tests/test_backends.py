"""The same code on both setups: DATABASE_URL and Q_REDIS_URL are all that change."""

import os
import threading

import pytest
from django.db import connection

from tasks import queue, selectors
from tasks.models import Task


def test_the_database_comes_from_database_url():
    url = os.environ.get("DATABASE_URL", "sqlite:")
    expected = "postgresql" if url.startswith(("postgres:", "postgresql:")) else "sqlite"

    assert connection.vendor == expected


def test_the_broker_comes_from_q_redis_url():
    expected = "redis" if os.environ.get("Q_REDIS_URL") else "orm"

    assert queue.broker_name() == expected


@pytest.mark.django_db
def test_queue_depth_counts_messages_waiting_in_the_configured_broker(monkeypatch):
    # The suite runs jobs inline; this test needs a message to stay in the broker.
    monkeypatch.setattr("django_q.conf.Conf.SYNC", False)
    queue._broker().purge_queue()
    before = queue.queue_depth()
    try:
        for attempt in (1, 2):
            queue.enqueue(task_id=10**9, attempt=attempt, timeout=5, name=f"depth-{attempt}")

        assert before == 0
        assert queue.queue_depth() == 2
    finally:
        queue._broker().purge_queue()
    assert queue.queue_depth() == 0


@pytest.mark.django_db
def test_a_submitted_task_runs_and_is_stored_on_the_configured_database(api, owner, run_jobs):
    response = run_jobs(
        api.post, "/tasks", {"type": "wordcount", "args": {"text": "a b a"}}, format="json"
    )

    assert response.status_code == 202
    task = Task.objects.get(pk=response.json()["task_id"])
    assert task.owner == owner
    assert task.status == "completed"
    assert task.output["words"] == 3
    assert [a.outcome for a in selectors.attempts_of(task=task)] == ["completed"]


@pytest.mark.django_db
def test_running_a_task_inline_starts_no_housekeeping_thread(api, run_jobs):
    body = {"type": "wordcount", "args": {"text": "a"}}

    response = run_jobs(api.post, "/tasks", body, format="json")

    assert response.status_code == 202
    assert Task.objects.get(pk=response.json()["task_id"]).status == "completed"
    # Not in this test, nor left behind by an earlier one in this process.
    assert "task-maintenance" not in {t.name for t in threading.enumerate()}
