"""Tasks in each state, made through the services the service itself uses."""

from datetime import timedelta

from django.utils import timezone

from tasks import services
from tasks.models import Status, Task


def completed(owner, run_jobs, text: str = "one two") -> Task:
    task = run_jobs(services.submit_task, owner=owner, type_name="wordcount", args={"text": text})
    task = task.task
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    return task


def failed(owner, run_jobs) -> Task:
    task = run_jobs(services.submit_task, owner=owner, type_name="test.fail", args={}).task
    task.refresh_from_db()
    assert task.status == Status.FAILED
    return task


def queued(owner, type_name: str = "wordcount") -> Task:
    """A queued task that is not due for an hour, so nothing runs it."""
    task = services.submit_task(
        owner=owner, type_name=type_name, args={"text": "later"}, delay=3600
    ).task
    assert task.status == Status.QUEUED
    return task


def in_progress(owner, worker: str = "host:1") -> Task:
    task = queued(owner)
    claimed = services.claim_task(task_id=task.pk, attempt=1, worker=worker)
    assert claimed is not None and claimed.status == Status.IN_PROGRESS
    return claimed


def cancelled(owner) -> Task:
    task = services.cancel_task(task=queued(owner))
    assert task.status == Status.CANCELLED
    return task


def set_times(task: Task, *, finished_ago: float, ran_for: float) -> Task:
    """Move a finished task's timestamps (not its status) into the past."""
    finished_at = timezone.now() - timedelta(seconds=finished_ago)
    Task.objects.filter(pk=task.pk).update(
        finished_at=finished_at, started_at=finished_at - timedelta(seconds=ran_for)
    )
    task.refresh_from_db()
    return task
