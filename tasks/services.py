"""What users do with tasks: submit, cancel, retry.

Each function is keyword-only and atomic, and raises the project's own
errors (ServiceError and its kinds), which the API maps to responses.
Status changes use `Task.objects.transition`, so a write that lost a race
changes nothing and reports it instead of overwriting somebody else's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Subquery, Value
from django.utils import timezone
from rest_framework import serializers

from . import queue, registry, worker
from .lifecycle import json_size
from .models import MAX_PRIORITY, MIN_PRIORITY, UNFINISHED, Status, Task

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidTask(ServiceError):
    """Field errors in a submitted task, under `fields`."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__("Invalid input: " + ", ".join(sorted(fields)) + ".", fields=fields)


class TaskConflict(ServiceError):
    status = 409


class TooManyTasks(ServiceError):
    status = 429


def _conf(key: str) -> Any:
    return settings.TASKS[key]


def _fingerprint(**fields: Any) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- Submitting ---------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    task: Task
    created: bool
    # True when `unique_key` found the owner's unfinished task of that type and key.
    deduplicated: bool = False


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
    concurrency_key: str = "",
    unique_key: str | None = None,
) -> Submitted:
    """Validate and record a task: one row in the task table, which is the queue.

    With an `idempotency_key`, the same key and request from the same owner
    within the idempotency window return the original task (`created=False`);
    the same key with a different request is a `TaskConflict`. With a
    `unique_key`, the owner's unfinished task of the same type and key is
    returned instead of a new one (`deduplicated=True`). The per-user cap on
    unfinished tasks holds however many submits race for its last place.
    """
    task_type = registry.get_type(type_name)
    if task_type is None:
        raise InvalidTask({"type": [f"Unknown task type {type_name!r}."]})
    try:
        validated_args = task_type.validate_args(args)
    except serializers.ValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"args": exc.detail}
        raise InvalidTask(detail) from exc
    if json_size(validated_args) > _conf("MAX_ARGS_BYTES"):
        raise InvalidTask({"args": [f"Arguments are larger than {_conf('MAX_ARGS_BYTES')} bytes."]})
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidTask({"priority": [f"Between {MIN_PRIORITY} and {MAX_PRIORITY}."]})
    if concurrency_key and not task_type.key_concurrency:
        raise InvalidTask(
            {"concurrency_key": [f"Task type {type_name!r} sets no key_concurrency."]}
        )

    now = timezone.now()
    if delay is not None:
        run_at = now + timedelta(seconds=delay)
    max_delay = timedelta(seconds=_conf("MAX_DELAY_SECONDS"))
    if run_at is not None and run_at > now + max_delay:
        field = "delay" if delay is not None else "run_at"
        seconds = max_delay.total_seconds()
        span = f"{seconds / 86400:g} days" if seconds % 86400 == 0 else f"{seconds:g} seconds"
        raise InvalidTask({field: [f"At most {span} ahead."]})
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
            concurrency_key=concurrency_key,
            unique_key=unique_key,
        )
        existing = _find_idempotent(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return Submitted(task=existing, created=False)

    task = Task(
        owner=owner,
        type=type_name,
        queue=task_type.queue,
        args=validated_args,
        timeout=timeout or task_type.timeout,
        max_retries=retries,
        retries_left=retries,
        priority=priority,
        run_at=run_at or now,
        concurrency_key=concurrency_key or "",
        unique_key=unique_key or None,
        idempotency_key=idempotency_key or None,
        request_fingerprint=fingerprint,
        created_at=now,
        updated_at=now,
    )
    try:
        with transaction.atomic():
            at_cap, task.turn = _lock_owner(owner, queue_name=task.queue, priority=priority)
            if unique_key:
                twin = _unfinished_twin(task)
                if twin is not None:
                    return Submitted(task=twin, created=False, deduplicated=True)
            if at_cap:
                raise _too_many()
            task.save(force_insert=True)
            queue.announce_work(task.queue)
    except IntegrityError:
        # Another request won a race on one of the keys: answer with its task.
        if unique_key and (twin := _unfinished_twin(task)) is not None:
            return Submitted(task=twin, created=False, deduplicated=True)
        if idempotency_key:
            existing = _find_idempotent(owner=owner, key=idempotency_key, fingerprint=fingerprint)
            if existing is not None:
                return Submitted(task=existing, created=False)
        raise
    _run_inline_on_commit(task)
    logger.info("task %s submitted: type=%s owner=%s", task.pk, type_name, owner.pk)
    return Submitted(task=task, created=True)


def _lock_owner(owner, *, queue_name: str, priority: int) -> tuple[bool, int]:
    """Make the owner's submits take turns until this transaction ends, then
    read what they decide on: whether the owner is at the cap on unfinished
    tasks, and a new task's turn in `queue_name`.

    PostgreSQL locks the user's row (NO KEY: other rows may still refer to
    it); SQLite's write transactions take turns already. The reads are a
    statement of their own, after the lock: a statement that waited for the
    lock still reads with the snapshot it started with, which misses the
    submit it waited for, and the cap would let both through.

    The turn (fairness): the turn being served in the queue at the task's
    priority now (turns only order tasks of equal priority), or, behind the
    owner's own queued backlog, the turn after its last. Each read is a few
    entries of an index, never a count of a backlog.
    """
    queued = Task.objects.filter(status=Status.QUEUED)
    head = queued.filter(queue=queue_name, priority=priority).order_by("turn", "run_at", "id")
    last = queued.filter(owner=OuterRef("pk")).order_by("-id")
    cap = _conf("MAX_UNFINISHED_PER_USER")
    unfinished = Task.objects.filter(owner=OuterRef("pk"), status__in=UNFINISHED)
    at_cap = Exists(unfinished[cap - 1 : cap]) if cap else Value(False)
    users = get_user_model().objects.filter(pk=owner.pk)
    if connection.features.has_select_for_update:  # elsewhere a plain SELECT: no lock
        list(users.select_for_update(no_key=True).values_list("pk", flat=True))
    row = (
        users.annotate(
            head=Subquery(head.values("turn")[:1]),
            last=Subquery(last.values("turn")[:1]),
            at_cap=at_cap,
        )
        .values_list("at_cap", "head", "last")
        .get()
    )
    full, head_turn, last_turn = row
    return bool(full), max(head_turn or 0, -1 if last_turn is None else last_turn + 1)


def _too_many() -> TooManyTasks:
    limit = _conf("MAX_UNFINISHED_PER_USER")
    return TooManyTasks(
        f"You already have {limit} unfinished tasks; wait for some to finish.", limit=limit
    )


def _unfinished_twin(task: Task) -> Task | None:
    return Task.objects.filter(
        owner=task.owner,
        type=task.type,
        unique_key=task.unique_key,
        status__in=UNFINISHED,
    ).first()


def _run_inline_on_commit(task: Task) -> None:
    """Inline mode (Q_SYNC, tests): run the task in this process once the
    row is committed, if it is due."""
    if queue.is_inline():
        transaction.on_commit(lambda: worker.run_now(task.pk))


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


# --- Cancel and retry ---------------------------------------------------------------


def cancel_task(*, task: Task) -> Task:
    """Cancel a queued task, or a claimed one no worker started yet, at once;
    ask a running one to stop (it ends `cancelled` at its next check).
    A finished task cannot be cancelled (`TaskConflict`)."""
    now = timezone.now()
    cancelled = {"finished_at": now, "cancel_requested": True, "lease_expires_at": None}
    moved = Task.objects.filter(pk=task.pk, status=Status.QUEUED).transition(
        Status.CANCELLED, **cancelled
    )
    if not moved:
        # Claimed by a cluster but not started: that attempt never ran, so
        # its number is given back (its worker will find nothing to start).
        moved = Task.objects.filter(
            pk=task.pk, status=Status.IN_PROGRESS, started_at__isnull=True
        ).transition(Status.CANCELLED, attempts=F("attempts") - 1, **cancelled)
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
    if task.status not in (Status.FAILED, Status.CANCELLED):
        raise TaskConflict(
            f"Only failed or cancelled tasks can be retried; this one is {task.status}.",
            status=task.status,
        )
    try:
        with transaction.atomic():
            at_cap, turn = _lock_owner(task.owner, queue_name=task.queue, priority=task.priority)
            if at_cap:
                raise _too_many()
            moved = Task.objects.filter(
                pk=task.pk, status__in=[Status.FAILED, Status.CANCELLED]
            ).transition(
                Status.QUEUED,
                retries_left=F("max_retries"),
                lost_count=0,
                cancel_requested=False,
                run_at=now,
                turn=turn,
                claimed_by="",
                finished_at=None,
                lease_expires_at=None,
                progress=0,
                progress_message="",
            )
            if moved:
                queue.announce_work(task.queue)
    except IntegrityError as exc:
        raise TaskConflict(
            "You have an unfinished task of this type with the same unique_key.",
            status=task.status,
        ) from exc
    task.refresh_from_db()
    if not moved:
        raise TaskConflict(
            f"Only failed or cancelled tasks can be retried; this one is {task.status}.",
            status=task.status,
        )
    _run_inline_on_commit(task)
    logger.info("task %s: manual retry queued (attempt %s)", task.pk, task.attempts + 1)
    return task
