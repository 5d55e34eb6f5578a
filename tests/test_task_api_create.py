"""POST /tasks with the queue options: priority, run_at/delay bounds,
concurrency_key, unique_key; and what the answers and task bodies show."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.models import Status, Task


def test_the_answer_and_the_task_body_show_the_queue_options(api, owner):
    body = {"type": "test.keyed", "priority": -7, "concurrency_key": "acct-1", "unique_key": "u1"}

    created = api.post("/tasks", body, format="json")

    assert created.status_code == 202
    assert created.json()["queue"] == "default"
    assert created.json()["type"] == "test.keyed"
    task = Task.objects.get(pk=created.json()["task_id"])
    assert (task.priority, task.concurrency_key, task.unique_key) == (-7, "acct-1", "u1")
    detail = api.get(f"/tasks/{task.pk}").json()
    assert detail["queue"] == "default"
    assert detail["priority"] == -7
    assert detail["concurrency_key"] == "acct-1"
    assert detail["unique_key"] == "u1"
    listed = api.get("/tasks").json()["results"][0]
    assert (listed["id"], listed["queue"], listed["priority"]) == (task.pk, "default", -7)


def test_a_type_in_another_queue_is_submitted_there(api, owner):
    created = api.post("/tasks", {"type": "test.reports"}, format="json")

    assert created.status_code == 202
    assert created.json()["queue"] == "reports"
    assert Task.objects.get(pk=created.json()["task_id"]).queue == "reports"


@pytest.mark.parametrize("priority", [101, -101, 1000])
def test_a_priority_out_of_range_is_400(api, owner, priority):
    response = api.post("/tasks", {"type": "demo", "priority": priority}, format="json")

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"priority"}
    assert Task.objects.count() == 0


@pytest.mark.parametrize("priority", [100, -100])
def test_the_ends_of_the_priority_range_are_accepted(api, owner, priority):
    response = api.post("/tasks", {"type": "demo", "priority": priority}, format="json")

    assert response.status_code == 202
    assert Task.objects.get().priority == priority


def test_run_at_beyond_the_maximum_delay_is_400(api, owner, settings):
    assert settings.TASKS["MAX_DELAY_SECONDS"] == 30 * 86400  # the default
    too_late = (timezone.now() + timedelta(days=31)).isoformat()
    in_time = (timezone.now() + timedelta(days=29)).isoformat()

    refused = api.post("/tasks", {"type": "demo", "run_at": too_late}, format="json")
    accepted = api.post("/tasks", {"type": "demo", "run_at": in_time}, format="json")

    assert refused.status_code == 400
    assert refused.json()["fields"] == {"run_at": ["At most 30 days ahead."]}
    assert accepted.status_code == 202
    assert Task.objects.count() == 1
    assert Task.objects.get().run_at > timezone.now() + timedelta(days=28)


def test_a_delay_beyond_the_maximum_is_400(api, owner, settings):
    too_long = settings.TASKS["MAX_DELAY_SECONDS"] + 1

    response = api.post("/tasks", {"type": "demo", "delay": too_long}, format="json")

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"delay"}
    assert Task.objects.count() == 0


@pytest.mark.parametrize("field", ["delay", "timeout", "priority", "max_retries"])
def test_a_boolean_is_no_number(api, owner, field):
    response = api.post("/tasks", {"type": "demo", field: True}, format="json")

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {field}
    assert Task.objects.count() == 0


def test_a_concurrency_key_on_a_type_without_key_concurrency_is_400(api, owner):
    response = api.post(
        "/tasks", {"type": "test.limited", "concurrency_key": "acct-1"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {
        "concurrency_key": ["Task type 'test.limited' sets no key_concurrency."]
    }
    assert Task.objects.count() == 0


def test_a_concurrency_key_over_200_characters_is_400(api, owner):
    response = api.post(
        "/tasks", {"type": "test.keyed", "concurrency_key": "k" * 201}, format="json"
    )

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"concurrency_key"}
    assert Task.objects.count() == 0


def test_unique_keys_of_two_users_never_collide(api, outsider_api, owner, outsider):
    body = {"type": "test.hold", "unique_key": "same"}

    mine = api.post("/tasks", body, format="json")
    theirs = outsider_api.post("/tasks", body, format="json")

    assert mine.status_code == theirs.status_code == 202
    assert "deduplicated" not in theirs.json()
    assert mine.json()["task_id"] != theirs.json()["task_id"]
    assert Task.objects.get(pk=theirs.json()["task_id"]).owner == outsider


def test_a_finished_task_frees_its_unique_key(api, owner, run_jobs):
    body = {"type": "test.hold", "unique_key": "nightly"}
    first = run_jobs(api.post, "/tasks", body, format="json")
    assert Task.objects.get(pk=first.json()["task_id"]).status == Status.COMPLETED

    second = api.post("/tasks", body, format="json")

    assert second.status_code == 202
    assert "deduplicated" not in second.json()
    assert second.json()["task_id"] != first.json()["task_id"]
    assert Task.objects.filter(unique_key="nightly").count() == 2
