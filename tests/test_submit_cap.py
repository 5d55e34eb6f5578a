"""The per-user cap on unfinished tasks, also when submits race for its last places."""

import pytest

from tasks import services
from tasks.models import UNFINISHED, Status, Task

from . import tasks_in_states
from .conftest import race


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


def test_a_manual_retry_respects_the_cap(owner, cap_of_two, run_jobs):
    failed = tasks_in_states.failed(owner, run_jobs)
    tasks_in_states.queued(owner)
    tasks_in_states.queued(owner)

    with pytest.raises(services.TooManyTasks):
        services.retry_task(task=failed)

    failed.refresh_from_db()
    assert failed.status == Status.FAILED


@pytest.mark.django_db(transaction=True)
def test_the_cap_holds_when_many_submits_race_for_its_last_places(make_user, settings):
    # Nothing may finish during the race: submits stay queued.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    settings.TASKS = {**settings.TASKS, "MAX_UNFINISHED_PER_USER": 3}
    for round_ in range(5):
        owner = make_user(f"racer-{round_}")

        def submit(owner=owner):
            try:
                return services.submit_task(owner=owner, type_name="test.hold").task.pk
            except services.TooManyTasks:
                return "too many"

        results = race(*[submit] * 10)

        created = [r for r in results if r != "too many"]
        assert len(created) == 3, (round_, results)
        assert results.count("too many") == 7
        unfinished = Task.objects.filter(owner=owner, status__in=UNFINISHED)
        assert sorted(unfinished.values_list("pk", flat=True)) == sorted(created)
