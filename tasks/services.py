"""Writes: every change to a task goes through a function here.

Each function is keyword-only and atomic. Status changes use
`Task.objects.transition`, so a write that lost a race changes nothing and
reports it, instead of overwriting somebody else's result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from rest_framework import serializers

from . import queue, registry
from .models import FINISHED, Status, Task, TaskAttempt, WorkerHeartbeat

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class TaskConflict(ServiceError):
    status = 409


class TooManyTasks(ServiceError):
    status = 429


def _conf(key: str) -> Any:
    return settings.TASKS[key]


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _fingerprint(**fields: Any) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- Submitting ---------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    task: Task
    created: bool


def submit_task(
    *,
    owner,
    type_name: str,
    args: dict[str, Any] | None = None,
    timeout: int | None = None,
    max_retries: int | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: float | None = None,
    idempotency_key: str | None = None,
) -> Submitted:
    """Validate and record a task, then enqueue it once the row is committed.

    With an `idempotency_key`, the same key and request from the same owner
    within the idempotency window return the original task (`created=False`);
    the same key with a different request is a `TaskConflict`.
    """
    task_type = registry.get_type(type_name)
    if task_type is None:
        raise serializers.ValidationError({"type": [f"Unknown task type {type_name!r}."]})
    validated_args = task_type.validate_args(args)
    if json_size(validated_args) > _conf("MAX_ARGS_BYTES"):
        raise serializers.ValidationError(
            {"args": [f"Arguments are larger than {_conf('MAX_ARGS_BYTES')} bytes."]}
        )

    now = timezone.now()
    if delay is not None:
        run_at = now + timedelta(seconds=delay)
    due_now = run_at is None or run_at <= now
    retries = task_type.max_retries if max_retries is None else max_retries
    fingerprint = ""
    if idempotency_key:
        fingerprint = _fingerprint(
            type=type_name,
            args=validated_args,
            timeout=timeout,
            max_retries=max_retries,
            priority=priority,
            run_at=run_at.isoformat() if run_at and delay is None else None,
            delay=delay,
        )
        existing = _find_idempotent(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return Submitted(task=existing, created=False)

    task = Task(
        owner=owner,
        type=type_name,
        args=validated_args,
        timeout=timeout or task_type.timeout,
        max_retries=retries,
        retries_left=retries,
        priority=priority,
        run_at=run_at,
        enqueued_at=now if due_now else None,
        transport_id=uuid.uuid4().hex,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
    )
    # A keyed insert runs in a transaction of its own, so that inside a
    # caller's transaction it is a savepoint, and losing a race on the unique
    # key does not break the caller's transaction. Otherwise the lone INSERT
    # commits by itself: BEGIN and COMMIT would only cost round trips (and,
    # on SQLite, hold the write lock longer). The message follows the commit.
    limit = _conf("MAX_UNFINISHED_PER_USER")
    try:
        with transaction.atomic() if idempotency_key else nullcontext():
            if Task.objects.insert_one(task, unless_unfinished=limit) is None:
                raise TooManyTasks(
                    f"You already have {limit} unfinished tasks; wait for some to finish.",
                    limit=limit,
                )
            if due_now:
                _enqueue_on_commit(task)
    except IntegrityError:
        if not idempotency_key:
            raise
        # Another request with the same key won the insert; answer with its task.
        existing = _find_idempotent(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if existing is None:
            raise
        return Submitted(task=existing, created=False)
    logger.info("task %s submitted: type=%s owner=%s", task.pk, type_name, owner.pk)
    return Submitted(task=task, created=True)


def _find_idempotent(*, owner, key: str, fingerprint: str) -> Task | None:
    task = Task.objects.filter(owner=owner, idempotency_key=key).first()
    if task is None:
        return None
    window = timedelta(hours=_conf("IDEMPOTENCY_HOURS"))
    if task.created_at < timezone.now() - window:
        # The key has expired: release it so a new task may take it.
        Task.objects.filter(pk=task.pk, idempotency_key=key).update(idempotency_key=None)
        return None
    if task.request_fingerprint != fingerprint:
        raise TaskConflict(
            "This Idempotency-Key was already used with a different request.",
            task_id=task.pk,
        )
    return task


def _enqueue_on_commit(task: Task) -> None:
    queue.enqueue_on_commit(
        task_id=task.pk,
        attempt=task.attempts + 1,
        timeout=task.timeout,
        name=task.transport_id,
    )


# --- Cancel and retry (user actions) --------------------------------------------


def cancel_task(*, task: Task) -> Task:
    """Cancel a queued task at once; ask a running one to stop.

    A running task ends `cancelled` at its next cancellation check. A finished
    task cannot be cancelled (`TaskConflict`).
    """
    now = timezone.now()
    moved = Task.objects.filter(pk=task.pk, status=Status.QUEUED).transition(
        Status.CANCELLED, finished_at=now, cancel_requested=True, lease_expires_at=None
    )
    if not moved:
        asked = Task.objects.filter(pk=task.pk, status=Status.IN_PROGRESS).update(
            cancel_requested=True, updated_at=now
        )
        if not asked:
            task.refresh_from_db()
            raise TaskConflict(
                f"The task is already {task.status} and cannot be cancelled.",
                status=task.status,
            )
    logger.info("task %s: cancel %s", task.pk, "done" if moved else "requested")
    task.refresh_from_db()
    return task


def retry_task(*, task: Task) -> Task:
    """Queue a new attempt of a failed or cancelled task, with a fresh retry budget."""
    now = timezone.now()
    with transaction.atomic():
        moved = Task.objects.filter(
            pk=task.pk, status__in=[Status.FAILED, Status.CANCELLED]
        ).transition(
            Status.QUEUED,
            retries_left=F("max_retries"),
            lost_count=0,
            cancel_requested=False,
            run_at=None,
            enqueued_at=now,
            finished_at=None,
            lease_expires_at=None,
            progress=0,
            progress_message="",
        )
        task.refresh_from_db()
        if not moved:
            raise TaskConflict(
                f"Only failed or cancelled tasks can be retried; this one is {task.status}.",
                status=task.status,
            )
        _enqueue_on_commit(task)
    logger.info("task %s: manual retry queued (attempt %s)", task.pk, task.attempts + 1)
    return task


# --- The worker's side --------------------------------------------------------------


def claim_task(*, task_id: int, attempt: int, worker: str) -> Task | None:
    """Start `attempt` of a task if it is still waiting for exactly that attempt.

    Returns None when another delivery already claimed it, it was cancelled,
    or the message is stale (an earlier attempt's): django-q2 may deliver a
    message twice, and this conditional update is what makes that harmless.

    The claim is one statement on purpose, which also returns the row it
    wrote (no second read): every write a worker makes per task
    competes for the database with the broker's own writes (on SQLite, for
    its single write lock). An attempt that ends otherwise than completed gets
    its record when it ends, from the row's `started_at` and `worker`.
    """
    now = timezone.now()
    return Task.objects.transition_one(
        task_id,
        Status.IN_PROGRESS,
        expect={"attempts": attempt - 1},
        attempts=attempt,
        started_at=now,
        finished_at=None,
        lease_expires_at=now + timedelta(seconds=_conf("LEASE_SECONDS")),
        worker=worker,
        progress=0,
        progress_message="",
        error=None,
    )


def renew_lease(*, task_id: int, attempt: int) -> bool:
    """Extend a running attempt's lease. False: the attempt is no longer ours."""
    until = timezone.now() + timedelta(seconds=_conf("LEASE_SECONDS"))
    return bool(
        Task.objects.filter(pk=task_id, status=Status.IN_PROGRESS, attempts=attempt).update(
            lease_expires_at=until
        )
    )


def report_progress(*, task_id: int, attempt: int, percent: int, message: str) -> bool:
    return bool(
        Task.objects.filter(pk=task_id, status=Status.IN_PROGRESS, attempts=attempt).update(
            progress=percent, progress_message=message[:200], updated_at=timezone.now()
        )
    )


def is_cancel_requested(*, task_id: int, attempt: int) -> bool:
    """True when the user asked to cancel, or the attempt is no longer ours."""
    row = (
        Task.objects.filter(pk=task_id)
        .values_list("cancel_requested", "status", "attempts")
        .first()
    )
    if row is None:
        return True
    cancel_requested, status, attempts = row
    return cancel_requested or status != Status.IN_PROGRESS or attempts != attempt


def _limit_output(output: Any) -> tuple[Any, bool]:
    size = json_size(output)
    limit = _conf("MAX_OUTPUT_BYTES")
    if size <= limit:
        return output, False
    # Never drop an oversized output silently: keep its head and say so.
    text = json.dumps(output, ensure_ascii=False)
    return {"truncated": True, "size": size, "head": text[: max(limit - 200, 0)]}, True


def complete_task(*, task_id: int, attempt: int, output: Any) -> bool:
    """End a running attempt `completed` with its output. False: the attempt
    is no longer ours (reaped, or finished by another delivery).

    One statement, no attempt record: the completed row itself says where and
    when its last attempt ran (see `selectors.attempts_of`). This is the path
    every task takes, and each write here competes with the broker's writes.
    """
    now = timezone.now()
    output, truncated = _limit_output(output)
    return Task.objects.transition_pk(
        task_id,
        Status.COMPLETED,
        expect={"attempts": attempt},
        output=output,
        output_truncated=truncated,
        progress=100,
        finished_at=now,
        lease_expires_at=None,
    )


def cancelled_while_running(*, task_id: int, attempt: int, claimed: Task | None = None) -> bool:
    now = timezone.now()
    with transaction.atomic():
        moved = Task.objects.filter(
            pk=task_id, status=Status.IN_PROGRESS, attempts=attempt
        ).transition(Status.CANCELLED, finished_at=now, lease_expires_at=None)
        if moved:
            _record_attempt(task_id, attempt, TaskAttempt.Outcome.CANCELLED, now, claimed=claimed)
    return bool(moved)


def backoff_seconds(retry_number: int) -> float:
    """Exponential backoff with full jitter for the n-th automatic retry."""
    base = _conf("RETRY_BACKOFF_BASE")
    ceiling = min(base * 2 ** (retry_number - 1), _conf("RETRY_BACKOFF_MAX"))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def fail_task(
    *,
    task_id: int,
    attempt: int,
    error: dict[str, Any],
    outcome: str = TaskAttempt.Outcome.FAILED,
) -> str | None:
    """Record a failed attempt: retry it after a backoff if retries are left,
    otherwise end the task `failed`. Returns the new status, or None if the
    attempt was no longer current."""
    now = timezone.now()
    with transaction.atomic():
        current = Task.objects.filter(
            pk=task_id, status=Status.IN_PROGRESS, attempts=attempt
        ).first()
        if current is None:
            return None
        if current.retries_left > 0 and not current.cancel_requested:
            retry_number = current.max_retries - current.retries_left + 1
            moved = Task.objects.filter(
                pk=task_id, status=Status.IN_PROGRESS, attempts=attempt
            ).transition(
                Status.QUEUED,
                error=error,
                retries_left=F("retries_left") - 1,
                run_at=now + timedelta(seconds=backoff_seconds(retry_number)),
                enqueued_at=None,
                lease_expires_at=None,
            )
            new_status = Status.QUEUED
        else:
            moved = Task.objects.filter(
                pk=task_id, status=Status.IN_PROGRESS, attempts=attempt
            ).transition(Status.FAILED, error=error, finished_at=now, lease_expires_at=None)
            new_status = Status.FAILED
        if not moved:
            return None
        _record_attempt(task_id, attempt, outcome, now, error=error, claimed=current)
    return new_status


def _record_attempt(
    task_id: int,
    number: int,
    outcome: str,
    now: datetime,
    *,
    error: dict[str, Any] | None = None,
    claimed: Task | None = None,
) -> None:
    """Write the record of an attempt that ended otherwise than completed
    (inside the transaction that ended it). Where it started and on which
    worker come from the row the claim wrote; `claimed` is that row when the
    caller holds it already."""
    if claimed is None or claimed.attempts != number:
        claimed = Task.objects.only("started_at", "worker").get(pk=task_id)
    TaskAttempt.objects.create(
        task_id=task_id,
        number=number,
        outcome=outcome,
        worker=claimed.worker,
        started_at=claimed.started_at or now,
        finished_at=now,
        error=error,
    )


# --- Maintenance: what the workers do between tasks --------------------------------


def dispatch_due_tasks(*, limit: int = 200) -> int:
    """Send delayed tasks and retries whose time has come."""
    now = timezone.now()
    due = list(
        Task.objects.filter(status=Status.QUEUED, enqueued_at__isnull=True, run_at__lte=now)
        .order_by("-priority", "run_at")
        .values_list("pk", "attempts", "timeout", "transport_id")[:limit]
    )
    sent = 0
    for pk, attempts, timeout, name in due:
        sent += _send_if_unchanged(pk, attempts, timeout, name, now, enqueued_at__isnull=True)
    return sent


def _send_if_unchanged(
    pk: int, attempts: int, timeout: int, name: str, now: datetime, **unchanged: Any
) -> bool:
    """Send the next attempt of a queued task if its row still looks as the
    caller read it. Whoever moves `enqueued_at` first sends the message;
    another worker's maintenance pass doing the same finds the row changed."""
    with transaction.atomic():
        moved = Task.objects.filter(
            pk=pk, status=Status.QUEUED, attempts=attempts, **unchanged
        ).update(enqueued_at=now)
        if moved:
            queue.enqueue_on_commit(task_id=pk, attempt=attempts + 1, timeout=timeout, name=name)
    return bool(moved)


def reap_expired_leases(*, limit: int = 200) -> int:
    """Recover tasks whose worker stopped renewing its lease (killed, crashed,
    or stuck past the transport's timeout)."""
    now = timezone.now()
    expired = list(Task.objects.filter(status=Status.IN_PROGRESS, lease_expires_at__lt=now)[:limit])
    for task in expired:
        _recover_lost(task, now)
    return len(expired)


def _recover_lost(task: Task, now: datetime) -> None:
    same_attempt = Q(
        pk=task.pk,
        status=Status.IN_PROGRESS,
        attempts=task.attempts,
        lease_expires_at=task.lease_expires_at,
    )
    timed_out = task.started_at and task.started_at + timedelta(seconds=task.timeout) <= now
    with transaction.atomic():
        if task.cancel_requested:
            moved = Task.objects.filter(same_attempt).transition(
                Status.CANCELLED, finished_at=now, lease_expires_at=None
            )
            outcome, error = TaskAttempt.Outcome.CANCELLED, None
        elif timed_out:
            error = timeout_error(task.timeout)
            outcome = TaskAttempt.Outcome.TIMED_OUT
            if task.retries_left > 0:
                moved = Task.objects.filter(same_attempt).transition(
                    Status.QUEUED,
                    error=error,
                    retries_left=F("retries_left") - 1,
                    run_at=now,
                    enqueued_at=None,
                    lease_expires_at=None,
                )
            else:
                moved = Task.objects.filter(same_attempt).transition(
                    Status.FAILED, error=error, finished_at=now, lease_expires_at=None
                )
        else:
            outcome = TaskAttempt.Outcome.LOST
            error = {
                "message": f"Worker lost: {task.worker or 'its worker'} stopped "
                "while running the task.",
                "type": "WorkerLost",
                "traceback": "",
            }
            if task.lost_count < _conf("MAX_LOST_REQUEUES"):
                moved = Task.objects.filter(same_attempt).transition(
                    Status.QUEUED,
                    error=error,
                    lost_count=F("lost_count") + 1,
                    run_at=now,
                    enqueued_at=None,
                    lease_expires_at=None,
                )
            else:
                moved = Task.objects.filter(same_attempt).transition(
                    Status.FAILED, error=error, finished_at=now, lease_expires_at=None
                )
        if moved:
            _record_attempt(task.pk, task.attempts, outcome, now, error=error, claimed=task)
            logger.warning("task %s: attempt %s recovered (%s)", task.pk, task.attempts, outcome)


def timeout_error(seconds: int) -> dict[str, str]:
    return {
        "message": f"Task timed out after {seconds} seconds.",
        "type": "TimeoutError",
        "traceback": "",
    }


def resend_lost_messages(
    *, missing_since: dict[tuple[int, datetime], datetime], limit: int = 200
) -> int:
    """Send again queued tasks whose message was lost in the transport.

    Neither broker re-delivers a message once a cluster has taken it (Redis
    never does; the project's ORM broker deletes a message as it hands it
    out, see queue.OrmBroker), so a message can vanish with a killed cluster
    before any worker claimed it. The broker hands out messages first in, first out, so the
    messages it still holds belong to the most recently sent tasks: when
    fewer messages wait than queued tasks have been sent, the oldest of those
    tasks are not in the broker. Such a task may just be on its way to a
    worker (taken off the broker, not claimed yet), so it counts as lost only
    once it has been missing for REQUEUE_AFTER_SECONDS. `missing_since` is
    the caller's memory between passes: when each (task, send time) was first
    seen missing. This works while new work keeps the queue busy, too.

    Both brokers hand out messages in the order they were sent; should a
    guess still be wrong, it sends a duplicate, which is harmless: only one
    delivery can claim the attempt.
    """
    now = timezone.now()
    sent_tasks = Task.objects.filter(status=Status.QUEUED, enqueued_at__isnull=False)
    missing: list[tuple] = []
    if sent_tasks.exists():
        depth = queue.queue_depth()  # None: the broker cannot say, so guess nothing
        deficit = 0 if depth is None else sent_tasks.count() - depth
        if deficit > 0:
            missing = list(
                sent_tasks.order_by("enqueued_at", "pk").values_list(
                    "pk", "attempts", "timeout", "transport_id", "enqueued_at"
                )[: min(deficit, limit)]
            )
    seen_now = {(pk, enqueued_at) for pk, _, _, _, enqueued_at in missing}
    for key in set(missing_since) - seen_now:
        del missing_since[key]  # claimed, or back in the count: not lost

    wait = timedelta(seconds=_conf("REQUEUE_AFTER_SECONDS"))
    sent = 0
    for pk, attempts, timeout, name, enqueued_at in missing:
        if now - missing_since.setdefault((pk, enqueued_at), now) < wait:
            continue
        del missing_since[(pk, enqueued_at)]
        sent += _send_if_unchanged(pk, attempts, timeout, name, now, enqueued_at=enqueued_at)
    if sent:
        logger.warning("re-sent %s queued tasks whose messages were lost", sent)
    return sent


def record_heartbeat(*, name: str, host: str, pid: int) -> None:
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(name=name).update(last_seen=now)
    if not updated:
        WorkerHeartbeat.objects.update_or_create(
            name=name, defaults={"host": host, "pid": pid, "last_seen": now, "started_at": now}
        )


def forget_worker(*, name: str) -> None:
    WorkerHeartbeat.objects.filter(name=name).delete()


def run_maintenance(
    *, missing_since: dict[tuple[int, datetime], datetime] | None = None
) -> dict[str, int]:
    """One pass of the housekeeping every worker runs about once a second.

    `missing_since` carries what `resend_lost_messages` saw in earlier passes;
    without it, a single pass never declares a message lost.
    """
    return {
        "dispatched": dispatch_due_tasks(),
        "reaped": reap_expired_leases(),
        "resent": resend_lost_messages(
            missing_since={} if missing_since is None else missing_since
        ),
    }


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
