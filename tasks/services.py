"""What users do with tasks: submit, cancel, retry.

Each function is keyword-only and atomic, and raises the project's own
errors (ServiceError and its kinds), which the API maps to responses.
Status changes use `Task.objects.transition`, so a write that lost a race
changes nothing and reports it instead of overwriting somebody else's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Subquery, Value
from django.utils import timezone
from rest_framework import serializers

from webhooks import outbox

from . import dependencies, queue, registry, worker
from .lifecycle import json_size
from .models import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    UNFINISHED,
    DependencyFailure,
    IdempotentBatch,
    Status,
    Task,
    TaskDependency,
)

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status to answer with,
    `code` the error body's machine-readable code (None: the status's usual
    one, config.errors.STATUS_CODES)."""

    status = 400
    code: str | None = None

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidTask(ServiceError):
    """Field errors in a submitted task, under `fields`."""

    code = "invalid"

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__("Invalid input: " + ", ".join(sorted(fields)) + ".", fields=fields)


class TaskConflict(ServiceError):
    status = 409
    code = "conflict"


class TooManyTasks(ServiceError):
    status = 429
    code = "cap_reached"


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


def build_task(
    *,
    owner,
    type_name: str,
    args: dict[str, Any] | None = None,
    timeout: int | None = None,
    max_retries: int | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: float | None = None,
    concurrency_key: str = "",
    unique_key: str | None = None,
    on_dependency_failure: str = DependencyFailure.CANCEL,
    now: datetime | None = None,
    queue_name: str | None = None,
    internal: bool = False,
) -> Task:
    """Validate a task's request and build its row (unsaved); InvalidTask
    with field errors when it is not valid. Internal types are refused unless
    `internal` (code, never a request); `queue_name` overrides the type's queue."""
    task_type = registry.get_type(type_name)
    if task_type is None or (task_type.internal and not internal):
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
    if on_dependency_failure not in DependencyFailure.values:
        raise InvalidTask({"on_dependency_failure": [f"One of {DependencyFailure.values}."]})

    now = now or timezone.now()
    if delay is not None:
        run_at = now + timedelta(seconds=delay)
    max_delay = timedelta(seconds=_conf("MAX_DELAY_SECONDS"))
    if run_at is not None and run_at > now + max_delay:
        field = "delay" if delay is not None else "run_at"
        seconds = max_delay.total_seconds()
        span = f"{seconds / 86400:g} days" if seconds % 86400 == 0 else f"{seconds:g} seconds"
        raise InvalidTask({field: [f"At most {span} ahead."]})
    retries = task_type.max_retries if max_retries is None else max_retries
    return Task(
        owner=owner,
        type=type_name,
        queue=queue_name or task_type.queue,
        args=validated_args,
        timeout=timeout or task_type.timeout,
        max_retries=retries,
        retries_left=retries,
        priority=priority,
        run_at=run_at or now,
        concurrency_key=concurrency_key or "",
        unique_key=unique_key or None,
        on_dependency_failure=on_dependency_failure,
        created_at=now,
        updated_at=now,
    )


def _parent_ids(depends_on: Any) -> list[int]:
    """The distinct ids of `depends_on`, checked for form; InvalidTask otherwise."""
    if depends_on is None:
        return []
    if not isinstance(depends_on, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in depends_on
    ):
        raise InvalidTask({"depends_on": ["A list of task ids."]})
    ids = list(dict.fromkeys(depends_on))
    if len(ids) > dependencies.MAX_PARENTS:
        raise InvalidTask({"depends_on": [f"At most {dependencies.MAX_PARENTS} tasks."]})
    return ids


def _link_parents(owner, tasks_and_parents: list[tuple[Task, list[int]]]) -> None:
    """Inside the creating transaction, before the tasks are saved: check the
    parents are the owner's (InvalidTask naming the others) and mark a task
    `waiting` while any of its parents has not completed."""
    wanted = {p for _, parents in tasks_and_parents for p in parents}
    found = dependencies.lock_parents(owner, wanted)
    unknown = sorted(p for p in wanted if p not in found)
    if unknown:
        raise InvalidTask({"depends_on": [f"Unknown task ids: {unknown}."]})
    for task, parents in tasks_and_parents:
        task.waiting = any(found[p] != Status.COMPLETED for p in parents)


def _save_links(tasks_and_parents: list[tuple[Task, list[int]]]) -> None:
    """After the tasks are saved: record their links, and settle at once
    those whose parents all finished already (released, or cancelled)."""
    TaskDependency.objects.bulk_create(
        TaskDependency(task_id=task.pk, parent_id=parent)
        for task, parents in tasks_and_parents
        for parent in parents
    )
    settled_now = [task.pk for task, parents in tasks_and_parents if parents and task.waiting]
    if settled_now:
        dependencies.settle(settled_now)


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
    schedule=None,
    scheduled_for: datetime | None = None,
    depends_on: list[int] | None = None,
    on_dependency_failure: str = DependencyFailure.CANCEL,
    queue_name: str | None = None,
    internal: bool = False,
) -> Submitted:
    """Validate and record a task: one row in the task table, which is the queue.

    With an `idempotency_key`, the same key and request from the same owner
    within the idempotency window return the original task (`created=False`);
    the same key with a different request is a `TaskConflict`. With a
    `unique_key`, the owner's unfinished task of the same type and key is
    returned instead of a new one (`deduplicated=True`). The per-user cap on
    unfinished tasks holds however many submits race for its last place.
    A schedule's fire passes the `schedule` and its `scheduled_for` time.
    With `depends_on` (the owner's task ids) the task waits until they all
    completed (tasks.dependencies).
    """
    parents = _parent_ids(depends_on)
    task = build_task(
        owner=owner,
        type_name=type_name,
        args=args,
        timeout=timeout,
        max_retries=max_retries,
        priority=priority,
        run_at=run_at,
        delay=delay,
        concurrency_key=concurrency_key,
        unique_key=unique_key,
        on_dependency_failure=on_dependency_failure,
        queue_name=queue_name,
        internal=internal,
    )
    task.schedule = schedule
    task.scheduled_for = scheduled_for
    fingerprint = ""
    if idempotency_key:
        fingerprint = _fingerprint(
            type=type_name,
            args=task.args,
            timeout=timeout,
            max_retries=max_retries,
            priority=priority,
            run_at=run_at.isoformat() if run_at and delay is None else None,
            delay=delay,
            concurrency_key=concurrency_key,
            unique_key=unique_key,
            # Only when given, so that keys of requests without them keep matching.
            **(
                {"depends_on": parents, "on_dependency_failure": on_dependency_failure}
                if parents
                else {}
            ),
        )
        existing = _find_idempotent(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return Submitted(task=existing, created=False)
        task.idempotency_key = idempotency_key
        task.request_fingerprint = fingerprint

    try:
        with transaction.atomic():
            at_cap, task.turn = _lock_owner(owner, queue_name=task.queue, priority=priority)
            if unique_key:
                twin = _unfinished_twin(task)
                if twin is not None:
                    return Submitted(task=twin, created=False, deduplicated=True)
            if at_cap:
                raise _too_many()
            if parents:
                _link_parents(owner, [(task, parents)])
            task.save(force_insert=True)
            if parents:
                _save_links([(task, parents)])
            if not task.waiting:
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
    _run_inline_on_commit(task.pk)
    logger.info("task %s submitted: type=%s owner=%s", task.pk, type_name, owner.pk)
    return Submitted(task=task, created=True)


# Stand-ins for the values of one submit in the owner's reads, compiled once:
# values no submit has, yet within their columns' ranges (the ORM turns an
# out-of-range integer lookup into "matches nothing").
_OWNER, _QUEUE, _PRIORITY = -2_000_000_011, "\x00queue\x00", 32_011


@functools.cache
def _owner_reads_sql(vendor: str, cap: int, adding: int) -> tuple[str, tuple[Any, ...]]:
    """The statement of `_lock_owner`'s reads, built by the ORM once per
    database, cap and batch size, and its parameters with stand-ins where a
    submit's own values go. Building the statement (three subqueries) cost
    more than running it: about a fifth of a `POST /tasks` in bench.submit.
    The one cached statement of the project; the ORM still writes it."""
    queued = Task.objects.filter(status=Status.QUEUED)
    # The turn served now is the runnable head's: read from the claim index.
    head = queued.filter(queue=_QUEUE, priority=_PRIORITY, waiting=False).order_by(
        "turn", "run_at", "id"
    )
    last = queued.filter(owner=OuterRef("pk")).order_by("-id")
    unfinished = Task.objects.filter(owner=OuterRef("pk"), status__in=UNFINISHED)
    room = cap - adding  # unfinished tasks the owner may have before these
    at_cap = Exists(unfinished[room:cap]) if cap and room >= 0 else Value(cap > 0)
    reads = (
        get_user_model()
        .objects.filter(pk=_OWNER)
        .annotate(
            head=Subquery(head.values("turn")[:1]),
            last=Subquery(last.values("turn")[:1]),
            at_cap=at_cap,
        )
        .values_list("at_cap", "head", "last")
    )
    sql, params = reads.query.sql_with_params()
    return sql, tuple(params)


def _lock_owner(owner, *, queue_name: str, priority: int, adding: int = 1) -> tuple[bool, int]:
    """Make the owner's submits take turns until this transaction ends, then
    read what they decide on: whether the owner is at the cap on unfinished
    tasks (with `adding` more tasks), and a new task's turn in `queue_name`.

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
    users = get_user_model().objects.filter(pk=owner.pk)
    if connection.features.has_select_for_update:  # elsewhere a plain SELECT: no lock
        list(users.select_for_update(no_key=True).values_list("pk", flat=True))
    sql, slots = _owner_reads_sql(connection.vendor, _conf("MAX_UNFINISHED_PER_USER"), adding)
    values = {_OWNER: owner.pk, _QUEUE: queue_name, _PRIORITY: priority}
    with connection.cursor() as cursor:
        cursor.execute(sql, [values.get(slot, slot) for slot in slots])
        row = cursor.fetchone()
    full, head_turn, last_turn = row
    return bool(full), max(head_turn or 0, -1 if last_turn is None else last_turn + 1)


# --- Batches ----------------------------------------------------------------------

# A batch item's reference to an earlier item of the same batch: "$0", "$1", ...
BATCH_REFERENCE = re.compile(r"\$(0|[1-9][0-9]{0,5})")


@dataclass(frozen=True)
class BatchSubmitted:
    task_ids: list[int]
    # Indexes of the items `unique_key` answered with an existing task.
    deduplicated: list[int]
    # False when an Idempotency-Key answered with the batch it made before.
    created: bool = True


def submit_batch(
    *, owner, items: list[dict[str, Any]], idempotency_key: str | None = None
) -> BatchSubmitted:
    """Create many tasks in one transaction, all or none.

    Each item takes the arguments of `submit_task` (but no idempotency key
    or schedule); its `depends_on` may name the owner's tasks by id or an
    earlier item of the batch as "$<index>". Every item is checked first:
    InvalidTask lists the errors under `tasks`, by item index, and nothing is
    created. The per-user cap counts every item. With an `idempotency_key`,
    the same key and items from the same owner within the idempotency window
    answer with the batch made the first time (`created=False`); the same
    key with other items is a `TaskConflict`.
    """
    limit = _conf("MAX_BATCH")
    if not items:
        raise InvalidTask({"tasks": ["Give at least one task."]})
    if len(items) > limit:
        raise InvalidTask({"tasks": [f"At most {limit} tasks in one batch."]})
    fingerprint = ""
    if idempotency_key:
        fingerprint = _fingerprint(items=items)
        made = _find_idempotent_batch(owner=owner, key=idempotency_key, fingerprint=fingerprint)
        if made is not None:
            return made
    try:
        return _submit_batch(
            owner=owner, items=items, idempotency_key=idempotency_key, fingerprint=fingerprint
        )
    except IntegrityError:
        # Another request with the same key committed first: its batch stands.
        if idempotency_key:
            made = _find_idempotent_batch(owner=owner, key=idempotency_key, fingerprint=fingerprint)
            if made is not None:
                return made
        raise


def _find_idempotent_batch(*, owner, key: str, fingerprint: str) -> BatchSubmitted | None:
    made = IdempotentBatch.objects.filter(owner=owner, key=key).first()
    if made is None:
        return None
    if made.created_at < _idempotency_cutoff():
        made.delete()  # expired: the key is free again
        return None
    if made.fingerprint != fingerprint:
        raise TaskConflict("This Idempotency-Key was already used with a different batch.")
    return BatchSubmitted(task_ids=list(made.task_ids), deduplicated=[], created=False)


def _submit_batch(
    *, owner, items: list[dict[str, Any]], idempotency_key: str | None, fingerprint: str
) -> BatchSubmitted:
    now = timezone.now()
    errors: dict[str, Any] = {}
    built: list[tuple[Task, list[int], list[int]]] = []  # task, parent ids, item refs
    for index, item in enumerate(items):
        fields = dict(item)
        try:
            ids, refs = _batch_parents(fields.pop("depends_on", None), index)
            task = build_task(owner=owner, now=now, **fields)
        except InvalidTask as exc:
            errors[str(index)] = exc.extra["fields"]
            continue
        built.append((task, ids, refs))
    if errors:
        raise InvalidTask({"tasks": errors})

    tasks = [task for task, _, _ in built]
    deduplicated: list[int] = []
    with transaction.atomic():
        first = tasks[0]
        at_cap, turn = _lock_owner(
            owner, queue_name=first.queue, priority=first.priority, adding=len(tasks)
        )
        # The parents named by id: the owner's, locked (tasks.dependencies).
        found = dependencies.lock_parents(owner, (p for _, ids, _ in built for p in ids))
        for index, (task, ids, refs) in enumerate(built):
            unknown = [p for p in ids if p not in found]
            if unknown:
                errors[str(index)] = {"depends_on": [f"Unknown task ids: {unknown}."]}
                continue
            task.waiting = bool(refs) or any(found[p] != Status.COMPLETED for p in ids)
        if errors:
            raise InvalidTask({"tasks": errors})
        if at_cap:
            raise _too_many()
        # What the owner's submits one after another would give each: the
        # turn served now in its queue and priority, after the previous one.
        heads: dict[tuple[str, int], int] = {(first.queue, first.priority): turn}
        last = turn - 1
        for task in tasks:
            key = (task.queue, task.priority)
            if key not in heads:
                heads[key] = _head_turn(*key)
            task.turn = last = max(heads[key], last + 1)
        # unique_key: an item whose key the owner (or an earlier item) holds
        # already is answered with that task instead.
        answered: dict[int, Task] = {}
        keys: dict[tuple[str, str], Task] = {}
        for index, task in enumerate(tasks):
            if not task.unique_key:
                continue
            twin = keys.get((task.type, task.unique_key)) or _unfinished_twin(task)
            if twin is not None:
                answered[index] = twin
                deduplicated.append(index)
            else:
                keys[(task.type, task.unique_key)] = task
        # Items later items depend on: marked before they are inserted (and
        # a task answered for one, locked as any parent is).
        referenced = {ref for _, _, refs in built for ref in refs}
        for ref in referenced:
            parent = answered.get(ref, tasks[ref])
            if parent.pk is None:  # new in this batch
                parent.has_dependants = True
            else:
                dependencies.lock_parents(owner, [parent.pk])
        new = [task for index, task in enumerate(tasks) if index not in answered]
        try:
            with transaction.atomic():
                Task.objects.bulk_create(new)
        except IntegrityError as exc:
            raise TaskConflict(
                "Another request took one of these unique_keys meanwhile; send the batch again."
            ) from exc
        final = [answered.get(index, task) for index, task in enumerate(tasks)]
        links = [
            (task, [*ids, *(final[ref].pk for ref in refs)])
            for index, (task, ids, refs) in enumerate(built)
            if index not in answered and (ids or refs)
        ]
        _save_links(links)
        task_ids = [task.pk for task in final]
        if idempotency_key:
            IdempotentBatch.objects.create(
                owner=owner, key=idempotency_key, fingerprint=fingerprint, task_ids=task_ids
            )
        for queue_name in sorted({t.queue for t in new if not t.waiting}):
            queue.announce_work(queue_name)
    for task in new:
        if not task.waiting:
            _run_inline_on_commit(task.pk)
    logger.info("batch of %s tasks submitted: owner=%s", len(new), owner.pk)
    return BatchSubmitted(task_ids=task_ids, deduplicated=deduplicated)


def _batch_parents(depends_on: Any, index: int) -> tuple[list[int], list[int]]:
    """A batch item's `depends_on`: (task ids, indexes of earlier items)."""
    if depends_on is None:
        return [], []
    if not isinstance(depends_on, list):
        raise InvalidTask({"depends_on": ['A list of task ids or "$<index>" references.']})
    ids: list[Any] = []
    refs: list[int] = []
    for value in depends_on:
        match = BATCH_REFERENCE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            ids.append(value)
            continue
        ref = int(match.group(1))
        if ref >= index:
            raise InvalidTask(
                {"depends_on": [f"{value} is not an earlier item of the batch (this is ${index})."]}
            )
        refs.append(ref)
    refs = list(dict.fromkeys(refs))
    ids = _parent_ids(ids)
    if len(ids) + len(refs) > dependencies.MAX_PARENTS:
        raise InvalidTask({"depends_on": [f"At most {dependencies.MAX_PARENTS} tasks."]})
    return ids, refs


def _head_turn(queue_name: str, priority: int) -> int:
    """The turn served now among runnable tasks of a queue and priority."""
    head = (
        Task.objects.filter(
            status=Status.QUEUED, waiting=False, queue=queue_name, priority=priority
        )
        .order_by("turn", "run_at", "id")
        .values_list("turn", flat=True)
        .first()
    )
    return head or 0


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


def _run_inline_on_commit(task_id: int) -> None:
    """Inline mode (Q_SYNC, tests): run the task in this process once the
    row is committed, if it is runnable then."""
    if queue.is_inline():
        transaction.on_commit(lambda: worker.run_now(task_id))


def _idempotency_cutoff() -> datetime:
    """Keys (of a task or of a batch) made before this have expired."""
    return timezone.now() - timedelta(hours=_conf("IDEMPOTENCY_HOURS"))


def _find_idempotent(*, owner, key: str, fingerprint: str) -> Task | None:
    task = Task.objects.filter(owner=owner, idempotency_key=key).first()
    if task is None:
        return None
    if task.created_at < _idempotency_cutoff():
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
    with transaction.atomic():
        moved = Task.objects.filter(pk=task.pk, status=Status.QUEUED).transition(
            Status.CANCELLED, **cancelled
        )
        if not moved:
            # Claimed by a cluster but not started: that attempt never ran, so
            # its number is given back (its worker will find nothing to start).
            moved = Task.objects.filter(
                pk=task.pk, status=Status.IN_PROGRESS, started_at__isnull=True
            ).transition(Status.CANCELLED, attempts=F("attempts") - 1, **cancelled)
        if moved:
            outbox.task_event(outbox.CANCELLED, task.pk, owner_id=task.owner_id)
            dependencies.parents_finished([task.pk])
            for dependant in dependencies.dependants_of(task.pk):
                _run_inline_on_commit(dependant)
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
                # A retry runs now: it does not wait for its parents again.
                waiting=False,
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
    _run_inline_on_commit(task.pk)
    logger.info("task %s: manual retry queued (attempt %s)", task.pk, task.attempts + 1)
    return task
