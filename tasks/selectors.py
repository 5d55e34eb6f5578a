"""Reads: every queryset the API touches is scoped to its owner here."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Task


def tasks_of(*, user) -> QuerySet[Task]:
    """The tasks `user` may see through the API: their own, newest first."""
    return Task.objects.filter(owner=user).order_by("-id")


def task_of(*, user, task_id: int) -> Task | None:
    """One of `user`'s tasks, or None (also for another user's id)."""
    return tasks_of(user=user).filter(pk=task_id).first()


def attempts_of(*, task: Task):
    return task.attempt_log.order_by("number")
