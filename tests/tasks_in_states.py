"""Tasks in each state, made through the services the service itself uses."""

from datetime import timedelta

from django.utils import timezone

from tasks import lifecycle, queue, services
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


def claim(task: Task, cluster: str = "cluster-1") -> queue.Claimed:
    """Claim `task` for `cluster` as a broker would, making it due first."""
    Task.objects.filter(pk=task.pk, run_at__gt=timezone.now()).update(run_at=timezone.now())
    claimed = queue.claim_one(task_id=task.pk, cluster=cluster)
    assert claimed is not None, f"task {task.pk} is not runnable"
    task.refresh_from_db()
    return claimed


def start(task: Task, worker: str = "host:1") -> Task:
    """Claim `task` and start its attempt in `worker`, as run_task does."""
    claimed = claim(task)
    assert lifecycle.start_attempt(task_id=task.pk, attempt=claimed.attempt, worker=worker)
    task.refresh_from_db()
    return task


def claimed(owner, cluster: str = "cluster-1") -> Task:
    """A task claimed by a cluster that no worker has started yet."""
    task = queued(owner)
    claim(task, cluster)
    assert task.status == Status.IN_PROGRESS and task.started_at is None
    return task


def in_progress(owner, worker: str = "host:1") -> Task:
    """A task whose attempt 1 runs in `worker` (nothing will end it)."""
    task = start(queued(owner), worker)
    assert task.status == Status.IN_PROGRESS and task.worker == worker
    return task


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
