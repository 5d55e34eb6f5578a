"""The django.tasks backend (tasks/django_tasks.py), with jobs run inline.
The same round trip on a real cluster: tests/e2e/test_django_tasks_e2e.py."""

from __future__ import annotations

from datetime import timedelta

import django_tasks
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from tasks import registry, services
from tasks.django_tasks import DEFAULT_OWNER, TYPE_NAME, TaskRunnerBackend
from tasks.models import Status, Task
from tests.testapp import background


def test_django_tasks_reads_its_backends_from_task_backends(settings):
    assert isinstance(django_tasks.task_backends["default"], TaskRunnerBackend)
    # The project's own TASKS setting is left to the task runner.
    assert "DEFAULT_TIMEOUT" in settings.TASKS


def test_overriding_task_backends_takes_effect(db, settings):
    settings.TASK_BACKENDS = {
        "default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}
    }
    result = background.add.enqueue(1, 2)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3
    assert not Task.objects.exists()


def test_an_enqueued_task_is_a_task_row_that_runs_and_answers_through_get_result(db, run_jobs):
    result = run_jobs(background.add.enqueue, 2, b=3)

    row = Task.objects.get(pk=int(result.id))
    assert row.type == TYPE_NAME
    assert row.status == Status.COMPLETED
    assert row.output == 5
    assert row.args == {
        "task": "tests.testapp.background.add",
        "backend": "default",
        "args": [2],
        "kwargs": {"b": 3},
    }
    owner = row.owner
    assert owner.get_username() == DEFAULT_OWNER
    assert not owner.is_active and not owner.has_usable_password()

    fetched = background.add.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 5
    assert fetched.args == [2] and fetched.kwargs == {"b": 3}
    assert fetched.attempts == 1 and fetched.finished_at is not None
    assert fetched.enqueued_at == row.created_at

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5


def test_a_task_that_takes_context_gets_its_result_and_attempt(db, run_jobs):
    result = run_jobs(background.describe.enqueue, "hello")

    row = Task.objects.get(pk=int(result.id))
    assert row.priority == 5
    assert row.output == {"tag": "hello", "attempt": 1, "id": result.id}
    assert background.describe.get_result(result.id).return_value == row.output


def test_a_coroutine_task_runs_too(db, run_jobs):
    result = run_jobs(background.add_async.enqueue, 4, 5)
    assert background.add_async.get_result(result.id).return_value == 9


def test_a_task_that_raises_fails_with_its_exception_and_traceback(db, run_jobs):
    result = run_jobs(background.explode.enqueue, "kaboom")

    fetched = background.explode.get_result(result.id)
    assert fetched.status == TaskResultStatus.FAILED
    assert len(fetched.errors) == 1
    assert fetched.errors[0].exception_class is ValueError
    assert "kaboom" in fetched.errors[0].traceback
    with pytest.raises(ValueError, match="failed"):
        fetched.return_value
    assert Task.objects.get(pk=int(result.id)).status == Status.FAILED


def test_a_retried_task_runs_again_and_keeps_every_error(db, run_jobs):
    result = run_jobs(background.explode.enqueue, "twice")
    run_jobs(services.retry_task, task=Task.objects.get(pk=int(result.id)))

    fetched = background.explode.get_result(result.id)
    assert fetched.status == TaskResultStatus.FAILED
    assert fetched.attempts == 2
    assert [e.exception_class for e in fetched.errors] == [ValueError, ValueError]


def test_a_deferred_task_waits_for_its_time(db, run_jobs):
    later = timezone.now() + timedelta(hours=1)
    result = run_jobs(background.add.using(run_after=later).enqueue, 1, 1)

    assert result.status == TaskResultStatus.READY
    row = Task.objects.get(pk=int(result.id))
    assert row.status == Status.QUEUED and row.run_at == later
    assert background.add.get_result(result.id).status == TaskResultStatus.READY


def test_a_cancelled_task_is_failed_for_django_tasks(db, run_jobs):
    later = timezone.now() + timedelta(hours=1)
    result = run_jobs(background.add.using(run_after=later).enqueue, 1, 1)
    services.cancel_task(task=Task.objects.get(pk=int(result.id)))

    assert background.add.get_result(result.id).status == TaskResultStatus.FAILED


def test_a_queue_the_backend_does_not_declare_is_refused(db):
    with pytest.raises(InvalidTaskError, match="Queue 'elsewhere'"):
        background.add.using(queue_name="elsewhere").enqueue(1, 2)
    assert not Task.objects.exists()


def test_the_backend_queues_are_served_by_clusters_serving_every_queue(db, settings, monkeypatch):
    monkeypatch.setattr(registry, "_extra_queues", set())
    assert "mail" not in registry.queue_names()
    settings.TASK_BACKENDS = {
        "default": {"BACKEND": "tasks.django_tasks.TaskRunnerBackend", "QUEUES": ["mail"]}
    }
    result = background.add.using(queue_name="mail").enqueue(1, 2)

    assert Task.objects.get(pk=int(result.id)).queue == "mail"
    assert "mail" in registry.queue_names()


def test_arguments_that_are_not_json_are_refused(db):
    with pytest.raises(TypeError):
        background.add.enqueue(object(), 1)
    assert not Task.objects.exists()


@pytest.mark.parametrize("result_id", ["999999", "abc", "-1", "99999999999999999999999", ""])
def test_an_unknown_result_id_does_not_exist(db, result_id):
    with pytest.raises(TaskResultDoesNotExist):
        background.add.get_result(result_id)


def test_a_result_id_of_a_user_task_is_not_a_django_task(db, owner, run_jobs):
    task = run_jobs(
        services.submit_task, owner=owner, type_name="wordcount", args={"text": "a"}
    ).task
    with pytest.raises(TaskResultDoesNotExist):
        background.add.get_result(str(task.pk))


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("tests.testapp.background.not_a_task", "not a function decorated"),
        ("os.system", "not a function decorated"),
        ("no.such.module.anything", "cannot be imported"),
    ],
)
def test_a_worker_runs_only_functions_decorated_with_task(db, run_jobs, path, why, tmp_path):
    owner = get_user_model().objects.create_user("service")
    task = run_jobs(
        services.submit_task,
        owner=owner,
        type_name=TYPE_NAME,
        args={"task": path, "backend": "default", "args": [f"touch {tmp_path}/ran"]},
        internal=True,
    ).task

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.error["type"] == "NotADjangoTask"
    assert why in task.error["message"]
    assert not (tmp_path / "ran").exists()


def test_the_api_neither_lists_nor_accepts_the_internal_type(api):
    types = api.get("/tasks/types").json()["types"]
    assert TYPE_NAME not in {t["name"] for t in types}

    response = api.post(
        "/tasks",
        {"type": TYPE_NAME, "args": {"task": "tests.testapp.background.add", "backend": "default"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"type": [f"Unknown task type {TYPE_NAME!r}."]}
    assert not Task.objects.exists()


def test_services_refuse_the_internal_type_unless_asked_by_code(owner):
    with pytest.raises(services.InvalidTask):
        services.submit_task(
            owner=owner,
            type_name=TYPE_NAME,
            args={"task": "tests.testapp.background.add", "backend": "default"},
        )
