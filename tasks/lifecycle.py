"""What workers do with a claimed attempt: start it, renew its lease, report
progress, and end it, with one retry policy for every way an attempt ends.

Every write here is conditional on the attempt still being the current one
(`status=in_progress, attempts=n`): a worker whose attempt was taken over
(its lease expired while it was paused, say) changes nothing with its late
writes. A dropped connection or a locked SQLite database is retried on a
fresh connection for up to a lease's length (`persistently`), so a short
database outage does not cost the attempt.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from webhooks import outbox

from . import dependencies, logs, statements
from .models import Status, Task, TaskAttempt

logger = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = TaskAttempt.Outcome


def _conf(key: str) -> Any:
    return settings.TASKS[key]


def persistently(write: Callable[[], T], *, what: str) -> T:
    """Run `write` (a whole transaction), again on a fresh connection after a
    connection error or "database is locked", until a lease's length has
    passed; then let the error through."""
    deadline = time.monotonic() + _conf("LEASE_SECONDS")
    pause = 0.05
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("%s failed on the database; trying again", what, exc_info=True)
            connection = connections[DEFAULT_DB_ALIAS]
            if not connection.in_atomic_block:
                connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _current(task_id: int, attempt: int):
    return Task.objects.filter(pk=task_id, status=Status.IN_PROGRESS, attempts=attempt)


def start_attempt(
    *, task_id: int, attempt: int, worker: str, claimed_by: str | None = None
) -> bool:
    """Start a claimed attempt in `worker`. False when the claim is no longer
    this worker's to start: released by the reaper (its lease ran out while
    its cluster was stopped) and perhaps claimed again by another cluster
    (`claimed_by` tells them apart), cancelled, or started already."""
    now = timezone.now()
    lease = now + timedelta(seconds=_conf("LEASE_SECONDS"))

    def write() -> int:
        # An owner without webhooks: one UPDATE, written once (tasks.statements).
        if statements.start(
            task_id=task_id,
            attempt=attempt,
            worker=worker,
            claimed_by=claimed_by,
            now=now,
            lease=lease,
        ):
            return 1
        # Its owner has webhooks (or the claim is no longer ours): the event
        # is recorded in the transaction of the start.
        claim = _current(task_id, attempt).filter(started_at__isnull=True, lease_expires_at__gt=now)
        if claimed_by is not None:
            claim = claim.filter(claimed_by=claimed_by)
        with transaction.atomic():
            started = claim.update(
                started_at=now, worker=worker, lease_expires_at=lease, error=None
            )
            if started:
                outbox.task_event(outbox.STARTED, task_id)
            return started

    return bool(persistently(write, what=f"task {task_id}: start"))


def renew_lease(*, task_id: int, attempt: int) -> bool:
    """Extend a running attempt's lease. False: the attempt is no longer ours."""
    until = timezone.now() + timedelta(seconds=_conf("LEASE_SECONDS"))
    return bool(
        persistently(
            lambda: _current(task_id, attempt).update(lease_expires_at=until),
            what=f"task {task_id}: lease renewal",
        )
    )


def report_progress(*, task_id: int, attempt: int, percent: int, message: str) -> bool:
    """Record progress. False: the attempt is no longer ours."""
    return bool(
        persistently(
            lambda: _current(task_id, attempt).update(
                progress=percent, progress_message=message[:200], updated_at=timezone.now()
            ),
            what=f"task {task_id}: progress",
        )
    )


def record_logs(*, task_id: int, lines: list[logs.Line]) -> int:
    """Store a task's buffered log lines (any attempt's: a line is true even
    when its attempt was taken over). Returns how many were stored."""
    return persistently(
        lambda: logs.append(task_id=task_id, lines=lines), what=f"task {task_id}: log lines"
    )


def is_cancel_requested(*, task_id: int, attempt: int) -> bool:
    """True when the user asked to cancel, or the attempt is no longer ours."""
    row = persistently(
        lambda: (
            Task.objects.filter(pk=task_id)
            .values_list("cancel_requested", "status", "attempts")
            .first()
        ),
        what=f"task {task_id}: cancellation check",
    )
    if row is None:
        return True
    cancel_requested, status, attempts = row
    return cancel_requested or status != Status.IN_PROGRESS or attempts != attempt


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def limit_output(output: Any) -> tuple[Any, bool]:
    """The output as stored: itself, or its head (at most MAX_OUTPUT_BYTES of
    UTF-8, never cut inside a character) flagged as truncated."""
    size = json_size(output)
    limit = _conf("MAX_OUTPUT_BYTES")
    if size <= limit:
        return output, False
    encoded = json.dumps(output, ensure_ascii=False).encode()
    head = encoded[: max(limit - 200, 0)].decode("utf-8", "ignore")
    return {"truncated": True, "size": size, "head": head}, True


def complete_attempt(*, task_id: int, attempt: int, output: Any) -> bool:
    """End a running attempt `completed` with its output. False: the attempt
    is no longer ours (reaped, or finished by another delivery). The
    completed row itself records where and when its last attempt ran."""
    output, truncated = limit_output(output)

    def write() -> int:
        changes = {
            "output": output,
            "output_truncated": truncated,
            "progress": 100,
            "finished_at": timezone.now(),
            "lease_expires_at": None,
        }
        # Nobody waits for most tasks, nor watches them: one UPDATE, written
        # once (tasks.statements).
        if statements.complete(
            task_id=task_id,
            attempt=attempt,
            output=output,
            truncated=truncated,
            now=changes["finished_at"],
        ):
            return 1
        current = _current(task_id, attempt)
        # Some task depends on this one, or its owner has webhooks (or the
        # attempt is no longer ours): one transaction with the release of the
        # tasks waiting for it and the webhook events.
        with transaction.atomic():
            moved = current.transition(Status.COMPLETED, **changes)
            if moved:
                outbox.task_event(outbox.COMPLETED, task_id)
                dependencies.parents_finished([task_id])
            return moved

    return bool(persistently(write, what=f"task {task_id}: completion"))


def backoff_seconds(retry_number: int) -> float:
    """Exponential backoff with full jitter before the n-th automatic retry."""
    base = _conf("RETRY_BACKOFF_BASE")
    ceiling = min(base * 2 ** (retry_number - 1), _conf("RETRY_BACKOFF_MAX"))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def timeout_error(seconds: int) -> dict[str, str]:
    return {
        "message": f"Task timed out after {seconds} seconds.",
        "type": "TimeoutError",
        "traceback": "",
    }


def lost_error(worker: str) -> dict[str, str]:
    return {
        "message": f"Worker lost: {worker or 'its worker'} stopped while running the task.",
        "type": "WorkerLost",
        "traceback": "",
    }


def end_attempt(
    *,
    task_id: int,
    attempt: int,
    outcome: str,
    error: dict[str, Any] | None = None,
    lease_expires_at: datetime | None = None,
) -> str | None:
    """End an attempt otherwise than completed: the one retry policy.

    A cancellation, or any end of an attempt whose task was asked to cancel,
    is `cancelled`. Otherwise the task goes back to the queue after an
    exponential backoff while its budget lasts (its retries; for a lost
    worker, MAX_LOST_REQUEUES of its own), and ends `failed` after that.
    The reaper passes the `lease_expires_at` it saw, so that a lease renewed
    meanwhile keeps the attempt alive. Returns the new status, or None if the
    attempt was no longer current.
    """

    def write() -> str | None:
        now = timezone.now()
        with transaction.atomic():
            same = _current(task_id, attempt)
            if lease_expires_at is not None:
                same = same.filter(lease_expires_at=lease_expires_at)
            task = same.first()
            if task is None:
                return None
            changes: dict[str, Any]
            kind: str
            if outcome == Outcome.CANCELLED or task.cancel_requested:
                target, changes, kind = Status.CANCELLED, {"finished_at": now}, Outcome.CANCELLED
            else:
                kind = outcome
                spend: dict[str, Any]
                if outcome == Outcome.LOST:
                    budget = _conf("MAX_LOST_REQUEUES") - task.lost_count
                    spend = {"lost_count": F("lost_count") + 1}
                    retry_number = task.lost_count + 1
                else:
                    budget = task.retries_left
                    spend = {"retries_left": F("retries_left") - 1}
                    retry_number = task.max_retries - task.retries_left + 1
                if budget > 0:
                    target = Status.QUEUED
                    changes = {
                        **spend,
                        "run_at": now + timedelta(seconds=backoff_seconds(retry_number)),
                        "claimed_by": "",
                    }
                else:
                    target, changes = Status.FAILED, {"finished_at": now}
            moved = same.transition(target, error=error, lease_expires_at=None, **changes)
            if not moved:
                return None
            if target != Status.QUEUED:
                # Before its dependants' events: receivers see causes first.
                outbox.task_event(outbox.FOR_STATUS[target], task_id, owner_id=task.owner_id)
            if target != Status.QUEUED and task.has_dependants:
                # Failed or cancelled: its dependants are cancelled (or run).
                dependencies.parents_finished([task_id])
            TaskAttempt.objects.create(
                task_id=task_id,
                number=attempt,
                outcome=kind,
                worker=task.worker,
                started_at=task.started_at or now,
                finished_at=now,
                error=error,
            )
            return target

    new_status = persistently(write, what=f"task {task_id}: end of attempt {attempt}")
    if new_status:
        logger.info("task %s: attempt %s %s -> %s", task_id, attempt, outcome, new_status)
    return new_status


def release_claim(*, task_id: int, attempt: int, lease_expires_at: datetime) -> bool:
    """Put back a claimed attempt that no worker started before its lease
    ran out (its cluster died or was stopped holding it): queued again as it
    was, the attempt number given back. True if it was released."""
    return bool(
        _current(task_id, attempt)
        .filter(started_at__isnull=True, lease_expires_at=lease_expires_at)
        .transition(Status.QUEUED, attempts=F("attempts") - 1, claimed_by="", lease_expires_at=None)
    )
