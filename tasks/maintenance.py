"""Housekeeping: the reaper of expired leases, dead workers' heartbeats, and
purging old tasks.

Every cluster's broker runs `run_maintenance` between claims, at most every
MAINTENANCE_SECONDS (tasks.cluster); any number of clusters may do so at
once, because every write here is conditional on what it read.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import lifecycle
from .models import FINISHED, Status, Task, TaskAttempt, WorkerHeartbeat

logger = logging.getLogger(__name__)

# Heartbeats of workers silent for this long are deleted.
DEAD_WORKER_RETENTION = timedelta(days=1)


def reap_expired_leases(*, limit: int = 200) -> int:
    """Recover attempts whose lease ran out: a claim no worker started is put
    back as it was; a started attempt ended by a timeout or a lost worker
    goes through the one retry policy (`lifecycle.end_attempt`)."""
    now = timezone.now()
    expired = list(
        Task.objects.filter(status=Status.IN_PROGRESS, lease_expires_at__lt=now)
        .order_by()
        .values_list("pk", "attempts", "lease_expires_at", "started_at", "timeout", "worker")[
            :limit
        ]
    )
    recovered = 0
    for pk, attempt, lease, started_at, timeout, worker in expired:
        if started_at is None:
            if lifecycle.release_claim(task_id=pk, attempt=attempt, lease_expires_at=lease):
                logger.warning("task %s: claim of attempt %s released (never started)", pk, attempt)
                recovered += 1
            continue
        if started_at + timedelta(seconds=timeout) <= now:
            outcome, error = TaskAttempt.Outcome.TIMED_OUT, lifecycle.timeout_error(timeout)
        else:
            outcome, error = TaskAttempt.Outcome.LOST, lifecycle.lost_error(worker)
        if lifecycle.end_attempt(
            task_id=pk, attempt=attempt, outcome=outcome, error=error, lease_expires_at=lease
        ):
            logger.warning("task %s: attempt %s recovered (%s)", pk, attempt, outcome)
            recovered += 1
    return recovered


def prune_dead_workers() -> int:
    """Forget workers that have been silent for a day."""
    deleted, _ = WorkerHeartbeat.objects.filter(
        last_seen__lt=timezone.now() - DEAD_WORKER_RETENTION
    ).delete()
    return deleted


def run_maintenance() -> dict[str, int]:
    """One pass of housekeeping."""
    return {"reaped": reap_expired_leases(), "pruned_workers": prune_dead_workers()}


def purge_tasks(
    *,
    older_than: timedelta,
    statuses: list[str] | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
) -> int:
    """Delete finished tasks (and their attempts) that finished more than
    `older_than` ago, `batch_size` at a time; return how many.

    `statuses` narrows the finished states purged (default: all of them);
    an unfinished state is refused, and unfinished tasks are never touched.
    With `dry_run`, only count what would go.
    """
    statuses = list(statuses or FINISHED)
    unfinished = sorted(set(statuses) - FINISHED)
    if unfinished:
        raise ValueError(f"Only finished tasks can be purged, not {', '.join(unfinished)}.")
    if batch_size < 1:
        raise ValueError("The batch size must be at least 1.")
    cutoff = timezone.now() - older_than
    # The status and finished_at conditions are checked again at every delete:
    # a task retried in the meantime is queued again with no finished_at.
    old = Task.objects.filter(status__in=statuses, finished_at__lt=cutoff).order_by()
    if dry_run:
        return old.count()
    deleted = 0
    while True:
        # Short transactions, one batch each, so workers and the API are never
        # held up behind one huge delete.
        with transaction.atomic():
            ids = list(old.select_for_update().values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            _, per_model = old.filter(pk__in=ids).delete()
        deleted += per_model.get(Task._meta.label, 0)
    logger.info(
        "purged %s finished tasks (%s) that finished before %s",
        deleted,
        ", ".join(statuses),
        cutoff.isoformat(),
    )
    return deleted
