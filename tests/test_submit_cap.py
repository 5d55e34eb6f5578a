"""The per-user cap on unfinished tasks (checked on every submit, so kept cheap)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks.models import Status, Task


@pytest.fixture
def cap_of_two(settings):
    settings.TASKS = {**settings.TASKS, "MAX_UNFINISHED_PER_USER": 2}


def test_a_submit_over_the_cap_is_refused_and_records_nothing(api, owner, cap_of_two):
    Task.objects.bulk_create(
        Task(owner=owner, type="wordcount", timeout=60, status=Status.QUEUED) for _ in range(2)
    )

    response = api.post("/tasks", {"type": "wordcount", "args": {"text": "x"}}, format="json")

    assert response.status_code == 429
    assert response.json()["error"].startswith("You already have 2 unfinished tasks")
    assert Task.objects.filter(owner=owner).count() == 2


def test_finished_and_other_users_tasks_do_not_count(api, owner, outsider, cap_of_two, run_jobs):
    Task.objects.bulk_create(
        [
            Task(owner=owner, type="wordcount", timeout=60, status=Status.COMPLETED),
            Task(owner=owner, type="wordcount", timeout=60, status=Status.FAILED),
            Task(owner=owner, type="wordcount", timeout=60, status=Status.QUEUED),
            Task(owner=outsider, type="wordcount", timeout=60, status=Status.QUEUED),
            Task(owner=outsider, type="wordcount", timeout=60, status=Status.QUEUED),
        ]
    )

    response = run_jobs(
        api.post, "/tasks", {"type": "wordcount", "args": {"text": "x"}}, format="json"
    )

    assert response.status_code == 202
    assert Task.objects.get(pk=response.json()["task_id"]).status == Status.COMPLETED


def test_the_cap_check_never_counts_the_whole_backlog(api, owner, cap_of_two):
    with CaptureQueriesContext(connection) as queries:
        api.post("/tasks", {"type": "wordcount", "args": {"text": "x"}}, format="json")

    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    # The probe rides on the INSERT itself, bounded by OFFSET (limit - 1).
    probes = [q["sql"] for q in queries if "INSERT" in q["sql"] and "OFFSET" in q["sql"]]
    assert len(probes) == 1, [q["sql"] for q in queries]
