"""Housekeeping: the reaper of expired leases, dead workers' heartbeats,
firing due schedules, and purging old tasks (by hand, `purge_tasks`; and
past each type's retention, every RETENTION_EVERY seconds, with the records
of expired refresh tokens).

Every cluster's broker runs `run_maintenance` between claims, at most every
MAINTENANCE_SECONDS, and `fire_schedules` on a faster timer of its own,
every SCHEDULE_POLL_SECONDS (tasks.cluster); any number of clusters may do
so at once, because every write here is conditional on what it read (and a
schedule's time fires one task by a uniqueness rule in the database).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import tokens

from . import lifecycle, registry
from .models import FINISHED, IdempotentBatch, Status, Task, TaskAttempt, WorkerHeartbeat

logger = logging.getLogger(__name__)


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
    """Forget workers silent for TASK_WORKER_PRUNE_SECONDS (a day by default)."""
    keep = timedelta(seconds=settings.TASKS["WORKER_PRUNE_SECONDS"])
    deleted, _ = WorkerHeartbeat.objects.filter(last_seen__lt=timezone.now() - keep).delete()
    return deleted


def fire_schedules() -> int:
    """Fire the schedules that are due (tasks.schedules); how many tasks were created."""
    from . import schedules  # schedules -> services -> worker -> lifecycle: imported late

    return schedules.fire_due_schedules()


# Retention is applied at most this often by each process (its queries
# read index ranges of old finished tasks: cheap, but not free).
RETENTION_EVERY = 30.0
_next_retention = 0.0


def purge_expired(*, batch_size: int = 500, now=None) -> int:
    """Delete finished tasks kept past their retention: their type's
    `retention`, else TASK_RETENTION (empty: forever). At most `batch_size`
    per type and for the default in one call, each batch in a short
    transaction of its own; what is left goes at the next pass."""
    now = now or timezone.now()
    explicit = {t.name: t.retention for t in registry.all_types() if t.retention is not None}
    default = registry.parse_retention(settings.TASKS["RETENTION"])
    finished = Task.objects.filter(status__in=FINISHED).order_by()
    plans = [
        (f"type {name}", finished.filter(type=name, finished_at__lt=now - keep))
        for name, keep in explicit.items()
    ]
    if default is not None:
        rest = finished.filter(finished_at__lt=now - default).exclude(type__in=list(explicit))
        plans.append(("default retention", rest))
    deleted = 0
    for label, old in plans:
        with transaction.atomic():
            ids = list(old.values_list("pk", flat=True)[:batch_size])
            if not ids:
                continue
            # Checked again at the delete: a task retried meanwhile is queued.
            _, per_model = old.filter(pk__in=ids).delete()
        count = per_model.get(Task._meta.label, 0)
        deleted += count
        logger.info("retention: purged %s finished tasks (%s)", count, label)
    return deleted


def forget_expired_batches(*, now=None) -> int:
    """Delete the Idempotency-Keys of batches older than the idempotency
    window (a task's key lives on its row; a batch's has a row of its own)."""
    now = now or timezone.now()
    window = timedelta(hours=settings.TASKS["IDEMPOTENCY_HOURS"])
    deleted, _ = IdempotentBatch.objects.filter(created_at__lt=now - window).delete()
    return deleted


def run_maintenance() -> dict[str, int]:
    """One pass of housekeeping."""
    global _next_retention
    done = {"reaped": reap_expired_leases(), "pruned_workers": prune_dead_workers()}
    if time.monotonic() >= _next_retention:
        _next_retention = time.monotonic() + RETENTION_EVERY
        purged = purge_expired()
        if purged:
            done["purged"] = purged
        flushed = tokens.flush_expired_tokens()
        if flushed:
            done["expired_tokens"] = flushed
        forgotten = forget_expired_batches()
        if forgotten:
            done["expired_batch_keys"] = forgotten
    return done


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
