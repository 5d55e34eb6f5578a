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
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import TruncMinute
from django.utils import timezone

from . import logs
from .models import (
    FINISHED,
    UNFINISHED,
    Schedule,
    Status,
    Task,
    TaskAttempt,
    TaskDependency,
    TaskLog,
    WorkerHeartbeat,
)


def _with_parents(tasks: QuerySet[Task]) -> QuerySet[Task]:
    """Each task's links to the tasks it depends on, with their states, in
    one more query per page (for `depends_on` and `waiting_for`)."""
    links = TaskDependency.objects.annotate(parent_status=F("parent__status")).order_by("parent_id")
    return tasks.prefetch_related(Prefetch("parent_links", queryset=links))


def tasks_of(*, user) -> QuerySet[Task]:
    """The tasks `user` may see through the API: their own, newest first."""
    return _with_parents(Task.objects.filter(owner=user).select_related("owner").order_by("-id"))


def all_tasks_for_staff(*, user) -> QuerySet[Task]:
    """Every user's tasks, newest first; staff only (PermissionDenied otherwise)."""
    if not (user.is_active and user.is_staff):
        raise PermissionDenied("Only staff may list every user's tasks.")
    return _with_parents(Task.objects.select_related("owner").order_by("-id"))


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


# How often a long-poll on PostgreSQL reads its task while the process's
# listener listens (every change to the task wakes it at once anyway).
LISTENING_RECHECK_SECONDS = 10.0


async def atask_of_when_finished(
    *, user, task_id: int, wait: float, first_interval: float = 0.1, max_interval: float = 1.0
) -> Task | None:
    """`task_of_when_finished` for the event loop (config.waits): each read
    runs in the loop's thread pool, the naps on the loop, so a waiting client
    holds no thread. On PostgreSQL, while the process's listener listens, a
    notification about one of the owner's tasks ends a nap, and naps are
    longer: a thousand waiting clients are not a thousand reads a second."""
    import asyncio

    from asgiref.sync import sync_to_async

    from .events import LoopFlag, wakeups

    def read() -> Task | None:
        # A pool thread serves many requests: drop its connection if it is
        # obsolete or broken, as a request thread does at each request.
        close_old_connections()
        return task_of(user=user, task_id=task_id)

    waker = wakeups()
    flag = LoopFlag(asyncio.get_running_loop())
    if waker:
        waker.subscribe(user.pk, flag)
    try:
        deadline = time.monotonic() + wait
        interval = first_interval
        while True:
            task = await sync_to_async(read, thread_sensitive=False)()
            left = deadline - time.monotonic()
            if task is None or task.status in FINISHED or left <= 0:
                return task
            nap = min(interval, left)
            if waker and waker.listening.is_set():
                # A change to the task notifies: read again on that, or
                # now and then in case one was missed while reconnecting.
                nap = min(LISTENING_RECHECK_SECONDS, left)
            try:
                await asyncio.wait_for(flag.event.wait(), nap)
            except TimeoutError:
                pass
            flag.event.clear()
            interval = min(interval * 1.5, max_interval)
    finally:
        if waker:
            waker.unsubscribe(user.pk, flag)


def log_lines_of(*, task: Task, after: int, limit: int) -> list[TaskLog]:
    """Up to `limit` of the log lines of `task` (already owner-checked) after seq `after`."""
    return logs.lines_after(task=task, after=after, limit=limit)


def last_log_lines_of(*, task: Task, count: int) -> list[TaskLog]:
    """The last `count` log lines of `task`, oldest first (the admin's tail)."""
    return list(reversed(TaskLog.objects.filter(task=task).order_by("-seq")[:count]))


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


def schedules_of(*, user) -> QuerySet[Schedule]:
    """The schedules `user` may see through the API: their own, newest first."""
    return Schedule.objects.filter(owner=user).select_related("owner").order_by("-id")


def schedule_of(*, user, schedule_id: int) -> Schedule | None:
    """One of `user`'s schedules, or None (also for another user's id)."""
    return schedules_of(user=user).filter(pk=schedule_id).first()


# --- Operator-level reads (health, metrics, the admin's dashboard) ------------------
# Not owner-scoped on purpose: these are aggregates for operators, never rows
# of one user's tasks, and they are only reachable from /health (counts only),
# /metrics (token or staff) and the admin (staff). Each is one small query on
# an index.


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
    run_at: delayed runs and retries waiting for their backoff; or waiting
    for the tasks they depend on)."""
    now = now or timezone.now()
    rows = (
        Task.objects.filter(status=Status.QUEUED)
        .order_by()
        .values_list("queue")
        .annotate(
            runnable=Count("pk", filter=Q(run_at__lte=now, waiting=False)),
            delayed=Count("pk", filter=Q(run_at__gt=now) | Q(waiting=True)),
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


@dataclass(frozen=True)
class LiveWorker:
    """A worker with a fresh heartbeat, and the tasks it runs now."""

    heartbeat: WorkerHeartbeat
    running: list[Task]


def live_workers(*, now: datetime | None = None) -> list[LiveWorker]:
    """Workers with a fresh heartbeat, with the tasks each runs now. Two
    queries: the heartbeats (few), and those workers' in-progress tasks (a
    range on the status index)."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.TASKS["WORKER_STALE_SECONDS"])
    beats = list(WorkerHeartbeat.objects.filter(last_seen__gte=stale_before).order_by("name"))
    running: dict[str, list[Task]] = {}
    tasks = (
        Task.objects.filter(status=Status.IN_PROGRESS, worker__in=[b.name for b in beats])
        .order_by("id")
        .only("pk", "type", "progress", "worker", "started_at")
    )
    for task in tasks:
        running.setdefault(task.worker, []).append(task)
    return [LiveWorker(heartbeat=b, running=running.get(b.name, [])) for b in beats]


def stale_worker_count(*, now: datetime | None = None) -> int:
    """Heartbeats older than WORKER_STALE_SECONDS, not yet pruned."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.TASKS["WORKER_STALE_SECONDS"])
    return WorkerHeartbeat.objects.filter(last_seen__lt=stale_before).count()


@dataclass(frozen=True)
class Minute:
    """The tasks that finished in one minute, by outcome."""

    start: datetime
    completed: int
    failed: int
    cancelled: int


def finished_per_minute(*, minutes: int = 60, now: datetime | None = None) -> list[Minute]:
    """Throughput and failures of the last `minutes` minutes, one entry per
    minute, oldest first (empty minutes included, as zeros).

    One aggregate over an index range (status, finished_at within the window):
    its cost follows the recent throughput, not the size of the table.
    """
    now = now or timezone.now()
    current = now.replace(second=0, microsecond=0)
    first = current - timedelta(minutes=minutes - 1)
    rows = (
        Task.objects.filter(status__in=FINISHED, finished_at__gte=first)
        .order_by()
        .annotate(minute=TruncMinute("finished_at"))
        .values("minute")
        .annotate(
            completed=Count("pk", filter=Q(status=Status.COMPLETED)),
            failed=Count("pk", filter=Q(status=Status.FAILED)),
            cancelled=Count("pk", filter=Q(status=Status.CANCELLED)),
        )
    )
    found = {row["minute"]: row for row in rows}
    series = []
    for i in range(minutes):
        start = first + timedelta(minutes=i)
        row = found.get(start, {})
        series.append(
            Minute(
                start=start,
                completed=row.get("completed", 0),
                failed=row.get("failed", 0),
                cancelled=row.get("cancelled", 0),
            )
        )
    return series


def owners_with_unfinished_tasks(*, limit: int = 30) -> list[tuple[int, str]]:
    """(id, username) of up to `limit` users with queued or running tasks,
    for the admin's owner filter."""
    User = get_user_model()
    owner_ids = (
        Task.objects.filter(status__in=UNFINISHED).order_by().values("owner_id").distinct()[:limit]
    )
    return list(
        User.objects.filter(pk__in=Subquery(owner_ids))
        .order_by(User.USERNAME_FIELD)
        .values_list("pk", User.USERNAME_FIELD)
    )


def clusters_claiming() -> list[str]:
    """The clusters that hold in-progress tasks now (the admin's cluster filter)."""
    return list(
        Task.objects.filter(status=Status.IN_PROGRESS)
        .exclude(claimed_by="")
        .order_by("claimed_by")
        .values_list("claimed_by", flat=True)
        .distinct()
    )
