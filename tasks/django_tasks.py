"""A django.tasks backend: Django code's `@task` functions run on Task Runner's
workers, as rows of the task table, and answer through django-tasks' result API.

    # settings.py (the project's own TASKS setting is taken; see tasks/apps.py)
    TASK_BACKENDS = {"default": {"BACKEND": "tasks.django_tasks.TaskRunnerBackend"}}

    # myapp/tasks.py
    from django_tasks import task

    @task(priority=10)
    def send_report(user_id: int) -> dict: ...

    result = send_report.enqueue(42)          # one Task row, queued
    send_report.get_result(result.id).status  # READY, RUNNING, SUCCESSFUL, FAILED

Each enqueue is one task of the internal type `django_tasks`, whose args name
the function by its import path. Requests can neither list nor submit that
type; a worker imports the stored path and runs it only if what it finds is a
django-tasks `Task` object (a function decorated with `@task` in code), so no
other callable is ever reached through it.

Options (under "OPTIONS"): OWNER, the username the tasks belong to (created,
inactive and without a password, on first use; default "django-tasks"), and
TIMEOUT / MAX_RETRIES, defaults for every task of the backend. "QUEUES"
lists the queue names tasks may use (default ["default"]); clusters serving
every queue serve these too.
"""

from __future__ import annotations

import builtins
from typing import Any, ParamSpec, TypeVar

import django_tasks
from asgiref.local import Local
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from django_tasks import DEFAULT_TASK_QUEUE_NAME, TaskResult, TaskResultStatus
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task as DjangoTask
from django_tasks.base import TaskError
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.utils import normalize_json
from rest_framework import serializers

from . import registry, selectors, services
from .models import Status, Task
from .registry import task_type

TYPE_NAME = "django_tasks"
BACKEND_PATH = "tasks.django_tasks.TaskRunnerBackend"
DEFAULT_OWNER = "django-tasks"

T = TypeVar("T")
P = ParamSpec("P")

STATUSES = {
    Status.QUEUED: TaskResultStatus.READY,
    Status.IN_PROGRESS: TaskResultStatus.RUNNING,
    Status.COMPLETED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    # django-tasks has no cancelled state: the task will never succeed.
    Status.CANCELLED: TaskResultStatus.FAILED,
}


class NotADjangoTask(Exception):
    """A stored path that does not name a function decorated with `@task`."""


def resolve_task(path: str) -> DjangoTask:
    """The django-tasks `Task` object at `path`, or NotADjangoTask."""
    try:
        found = import_string(path)
    except ImportError as exc:
        raise NotADjangoTask(f"{path!r} cannot be imported: {exc}") from exc
    if not isinstance(found, DjangoTask):
        raise NotADjangoTask(f"{path!r} is not a function decorated with django_tasks' @task.")
    if found.module_path != path:
        raise NotADjangoTask(f"{path!r} is another name for {found.module_path!r}.")
    return found


class DjangoTaskArgs(serializers.Serializer):
    task = serializers.CharField(max_length=500, help_text="Import path of the @task function.")
    backend = serializers.CharField(max_length=100, help_text="The django-tasks backend alias.")
    args = serializers.ListField(child=serializers.JSONField(), required=False, default=list)
    kwargs = serializers.DictField(required=False, default=dict)


@task_type(
    TYPE_NAME,
    args=DjangoTaskArgs,
    internal=True,
    description="A function decorated with django_tasks' @task, enqueued by code.",
)
def run_django_task(ctx, task: str, backend: str, args: list, kwargs: dict) -> Any:
    django_task = resolve_task(task)
    if django_task.takes_context:
        row = Task.objects.get(pk=ctx.task_id)
        context = django_tasks.TaskContext(task_result=result_of(row, django_task, backend))
        value = django_task.call(context, *args, **kwargs)
    else:
        value = django_task.call(*args, **kwargs)
    return normalize_json(value)


def _exception_path(name: str) -> str:
    """django-tasks wants an exception's import path; a task's error records
    its class name (a builtin's name resolves in `builtins`)."""
    if "." in name:
        return name
    return f"builtins.{name}" if isinstance(getattr(builtins, name, None), type) else name


def result_of(row: Task, django_task: DjangoTask, alias: str) -> TaskResult:
    """The django-tasks view of a task row."""
    attempts = selectors.attempts_of(task=row)
    errors = [
        TaskError(
            exception_class_path=_exception_path(str(a.error.get("type", "Exception"))),
            traceback=str(a.error.get("traceback", "")),
        )
        for a in attempts
        if a.error
    ]
    if row.status == Status.FAILED and row.error and not errors:
        errors.append(
            TaskError(
                exception_class_path=_exception_path(str(row.error.get("type", "Exception"))),
                traceback=str(row.error.get("traceback", "")),
            )
        )
    finished = row.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    stored = row.args or {}
    result: TaskResult = TaskResult(
        task=django_task.using(priority=row.priority, queue_name=row.queue, backend=alias),
        id=str(row.pk),
        status=STATUSES[Status(row.status)],
        enqueued_at=row.created_at,
        started_at=attempts[0].started_at if attempts else None,
        last_attempted_at=attempts[-1].started_at if attempts else None,
        finished_at=row.finished_at if finished else None,
        args=list(stored.get("args", [])),
        kwargs=dict(stored.get("kwargs", {})),
        backend=alias,
        errors=errors,
        worker_ids=[a.worker for a in attempts],
    )
    if row.status == Status.COMPLETED:
        object.__setattr__(result, "_return_value", row.output)
    return result


class TaskRunnerBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        self.queues = self.queues or {DEFAULT_TASK_QUEUE_NAME}
        for name in self.queues:
            registry.add_queue(name)
        self.owner_username = self.options.get("OWNER", DEFAULT_OWNER)
        self.timeout = self.options.get("TIMEOUT")
        self.max_retries = self.options.get("MAX_RETRIES")

    @staticmethod
    def _check_findable(task: DjangoTask) -> None:
        """A worker finds the function again by its path alone. (Not part of
        validate_task, which also runs while `@task` decorates, before the
        module has the name.)"""
        try:
            found = resolve_task(task.module_path)
        except NotADjangoTask as exc:
            raise InvalidTaskError(str(exc)) from exc
        if found.func is not task.func:
            raise InvalidTaskError(f"{task.module_path!r} names another function.")

    def _owner(self):
        User = get_user_model()
        user, created = User.objects.get_or_create(
            **{User.USERNAME_FIELD: self.owner_username}, defaults={"is_active": False}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user

    def enqueue(self, task: DjangoTask[P, T], args: P.args, kwargs: P.kwargs) -> TaskResult[T]:  # type: ignore[valid-type]
        self.validate_task(task)
        self._check_findable(task)
        try:
            submitted = services.submit_task(
                owner=self._owner(),
                type_name=TYPE_NAME,
                args={
                    "task": task.module_path,
                    "backend": self.alias,
                    "args": normalize_json(list(args)),
                    "kwargs": normalize_json(dict(kwargs)),
                },
                timeout=self.timeout,
                max_retries=self.max_retries,
                priority=task.priority,
                run_at=task.run_after,
                queue_name=task.queue_name,
                internal=True,
            )
        except services.InvalidTask as exc:
            raise InvalidTaskError(f"{exc.message} {exc.extra.get('fields')}") from exc
        return result_of(submitted.task, task, self.alias)

    def get_result(self, result_id: str) -> TaskResult:
        row = None
        if isinstance(result_id, str) and result_id.isascii() and result_id.isdigit():
            if 0 < int(result_id) < 2**63:
                row = Task.objects.filter(pk=int(result_id), type=TYPE_NAME).first()
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        stored = row.args or {}
        try:
            django_task = resolve_task(str(stored.get("task", "")))
        except NotADjangoTask as exc:
            raise TaskResultDoesNotExist(f"{result_id}: {exc}") from exc
        return result_of(row, django_task, str(stored.get("backend") or self.alias))


def register_queues() -> None:
    """Serve the queues of every TaskRunnerBackend in TASK_BACKENDS (clusters
    compute their queues before any backend exists)."""
    for params in getattr(settings, "TASK_BACKENDS", {}).values():
        if params.get("BACKEND") == BACKEND_PATH:
            for name in params.get("QUEUES") or [DEFAULT_TASK_QUEUE_NAME]:
                registry.add_queue(name)


@receiver(setting_changed)
def reset_backends(*, setting: str, **kwargs: Any) -> None:
    """Let `override_settings(TASK_BACKENDS=...)` take effect, as django-tasks
    does itself for the setting name it knows (TASKS)."""
    if setting == "TASK_BACKENDS":
        handler = django_tasks.task_backends
        handler._settings = handler.settings = handler.configure_settings(None)  # type: ignore[attr-defined]
        handler._connections = Local()  # type: ignore[attr-defined]
