"""The same code on both setups: DATABASE_URL and CACHE_URL are all that change."""

import os
import threading

import pytest
from django.conf import settings
from django.db import connection

from tasks import selectors
from tasks.models import Task


def test_the_database_comes_from_database_url():
    url = os.environ.get("DATABASE_URL", "sqlite:")
    expected = "postgresql" if url.startswith(("postgres:", "postgresql:")) else "sqlite"

    assert connection.vendor == expected


def test_the_cache_comes_from_cache_url():
    url = os.environ.get("CACHE_URL", "locmemcache://")
    expected = "redis" if url.startswith(("redis:", "rediss:")) else "locmem"

    assert expected in settings.CACHES["default"]["BACKEND"].lower()


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
    # Not in this test, nor left behind by an earlier one in this process:
    # only a cluster's worker processes keep leases alive.
    assert "task-lease" not in {t.name for t in threading.enumerate()}
