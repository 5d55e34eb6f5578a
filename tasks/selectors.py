"""Reads: every queryset the API touches is scoped to its owner here.

The exceptions are `all_tasks_for_staff`, which refuses anyone but staff,
and the operator-level aggregates at the end, which feed /health and /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.utils import timezone

from .models import FINISHED, UNFINISHED, Status, Task, TaskAttempt, WorkerHeartbeat


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


def attempts_of(*, task: Task) -> list[TaskAttempt]:
    """Every attempt of `task`, oldest first.

    Attempts that failed, timed out, were cancelled or lost their worker have
    a record; the attempt running now, and the one that completed the task,
    are described by the task row itself (it holds their worker and times).
    """
    attempts = list(task.attempt_log.order_by("number"))
    current = task.attempts
    if current and task.status in (Status.IN_PROGRESS, Status.COMPLETED):
        if all(a.number != current for a in attempts):
            running = task.status == Status.IN_PROGRESS
            attempts.append(
                TaskAttempt(
                    task=task,
                    number=current,
                    outcome=TaskAttempt.Outcome.RUNNING
                    if running
                    else TaskAttempt.Outcome.COMPLETED,
                    worker=task.worker,
                    started_at=task.started_at or task.created_at,
                    finished_at=None if running else task.finished_at,
                )
            )
    return attempts


# --- Operator-level reads (health, metrics) ----------------------------------------
# Not owner-scoped on purpose: these are aggregates for operators, never rows
# of one user's tasks, and they are only reachable from /health (counts only)
# and /metrics (token or staff). Each is one small query on an index.


def database_reachable() -> bool:
    """True when a trivial query succeeds on the default database."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return False
    return True


def workers_alive(*, now: datetime | None = None) -> int:
    """Worker processes whose heartbeat is newer than WORKER_STALE_SECONDS."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.TASKS["WORKER_STALE_SECONDS"])
    return WorkerHeartbeat.objects.filter(last_seen__gte=stale_before).count()


def unfinished_task_counts() -> dict[str, int]:
    """How many tasks are queued and in progress (a range on the status indexes)."""
    counts = dict.fromkeys((Status.QUEUED, Status.IN_PROGRESS), 0)
    rows = (
        Task.objects.filter(status__in=UNFINISHED)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    counts.update(dict(rows))
    return {str(status): n for status, n in counts.items()}


def task_counts_by_status_and_type() -> list[tuple[str, str, int]]:
    """(status, type, count) for every pair present; the GROUP BY reads only
    the (status, type) index, never the rows with their JSON columns."""
    return list(
        Task.objects.order_by()
        .values_list("status", "type")
        .annotate(n=Count("pk"))
        .order_by("status", "type")
    )


def queue_depths(*, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Queued tasks per queue: `runnable` (due now) and `delayed` (a later
    run_at: delayed runs and retries waiting for their backoff)."""
    now = now or timezone.now()
    rows = (
        Task.objects.filter(status=Status.QUEUED)
        .order_by()
        .values_list("queue")
        .annotate(
            runnable=Count("pk", filter=Q(run_at__lte=now)),
            delayed=Count("pk", filter=Q(run_at__gt=now)),
        )
    )
    return {name: {"runnable": runnable, "delayed": delayed} for name, runnable, delayed in rows}


@dataclass(frozen=True)
class DurationStats:
    """Durations of the tasks of one type that finished inside a window."""

    type: str
    count: int
    sum_seconds: float
    # Cumulative counts, one per bucket upper bound (seconds), ascending.
    buckets: tuple[tuple[float, int], ...]


def recent_duration_stats(
    *, window: timedelta, bounds: Sequence[float], now: datetime | None = None
) -> list[DurationStats]:
    """Per-type duration histogram of tasks that ran and finished within `window`.

    One aggregate query over an index range (status, finished_at >= now - window),
    so its cost follows the recent throughput, not the size of the table. Each
    bucket is a conditional COUNT computed in the database.
    """
    now = now or timezone.now()
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    bucket_counts = {
        f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for i, bound in enumerate(bounds)
    }
    rows = (
        Task.objects.filter(
            status__in=FINISHED, finished_at__gte=now - window, started_at__isnull=False
        )
        .order_by()
        .annotate(duration=duration)
        .values("type")
        .annotate(count=Count("pk"), total=Sum("duration"), **bucket_counts)
        .order_by("type")
    )
    return [
        DurationStats(
            type=row["type"],
            count=row["count"],
            sum_seconds=_seconds(row["total"]),
            buckets=tuple((bound, row[f"le_{i}"]) for i, bound in enumerate(bounds)),
        )
        for row in rows
    ]


def recent_finished_counts(
    *, window: timedelta, now: datetime | None = None
) -> list[tuple[str, str, int]]:
    """(status, type, count) of tasks that finished within `window`."""
    now = now or timezone.now()
    return list(
        Task.objects.filter(status__in=FINISHED, finished_at__gte=now - window)
        .order_by()
        .values_list("status", "type")
        .annotate(n=Count("pk"))
        .order_by("status", "type")
    )


def _seconds(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    # Some backends hand back the sum of a duration as microseconds.
    return float(value) / 1_000_000
