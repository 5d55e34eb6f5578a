"""Reads: every queryset the API touches is scoped to its owner here.

The one exception is `all_tasks_for_staff`, which refuses anyone but staff.
"""

from __future__ import annotations

import time

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from .models import FINISHED, Task


def tasks_of(*, user) -> QuerySet[Task]:
    """The tasks `user` may see through the API: their own, newest first."""
    return Task.objects.filter(owner=user).select_related("owner").order_by("-id")


def all_tasks_for_staff(*, user) -> QuerySet[Task]:
    """Every user's tasks, newest first; staff only (PermissionDenied otherwise)."""
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("Only staff may list every user's tasks.")
    return Task.objects.select_related("owner").order_by("-id")


def task_of(*, user, task_id: int) -> Task | None:
    """One of `user`'s tasks, or None (also for another user's id)."""
    return tasks_of(user=user).filter(pk=task_id).first()


def task_of_when_finished(
    *, user, task_id: int, wait: float, first_interval: float = 0.1, max_interval: float = 1.0
) -> Task | None:
    """One of `user`'s tasks, read again until it is finished or `wait`
    seconds have passed; None if it is not theirs (or disappears).

    Each read is its own short query in autocommit mode: no transaction or
    lock is held while sleeping, so writers (the worker finishing the task)
    are never blocked by a waiting client. Reads start frequent and back off.
    """
    deadline = time.monotonic() + wait
    interval = first_interval
    while True:
        task = task_of(user=user, task_id=task_id)
        left = deadline - time.monotonic()
        if task is None or task.status in FINISHED or left <= 0:
            return task
        time.sleep(min(interval, left))
        interval = min(interval * 1.5, max_interval)


def attempts_of(*, task: Task):
    return task.attempt_log.order_by("number")
