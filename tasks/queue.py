"""The claim: the one place that picks runnable task rows for the workers.

The Task table is the queue. A task is runnable when it is queued, due
(`run_at` <= now), waits for no other task (`waiting`, tasks.dependencies),
in a queue the cluster serves, and within its limits.
Runnable tasks are claimed in order: priority (higher first), the owner's
turn (users take turns among equal priorities), due time, id.

Claiming moves a row from queued to in_progress with its next attempt
number, a short lease and the claiming cluster's name, in one statement
(UPDATE ... RETURNING, with SKIP LOCKED on PostgreSQL so that clusters on
any number of hosts never wait for one another), written here once per
database and run on Django's cursor. With tasks.statements (the worker's
start and completion) it is the only SQL the tasks app writes by hand, for
the reason given there. The worker that then runs the attempt starts it
(`lifecycle.start_attempt`); a claim whose cluster died before that is
released by the reaper when its lease expires.

Global limits (per type, per key, per user) need every claimer to see the
others' claims: when any may apply, claims take turns (an advisory lock on
PostgreSQL; SQLite runs one writer at a time anyway), count what runs, and
leave over-limit tasks queued without letting them block the rest.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import registry, statements
from .models import Status, Task

logger = logging.getLogger(__name__)

# Any number that no other part of the project uses as an advisory lock key.
CLAIM_LOCK_KEY = 7_346_110_001
# How many candidate rows one claim reads per task it may take: more than
# one, so that a few over-limit tasks at the head do not end a claim early.
WINDOW_FACTOR = 4
MIN_WINDOW = 16
# Channel on which PostgreSQL announces new runnable work to idle clusters.
CHANNEL = "taskrunner_work"


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one claimed attempt."""

    id: int
    attempt: int
    type: str
    args: dict[str, Any]
    timeout: int
    owner_id: int

    def run_args(self) -> tuple[int, int, str, dict[str, Any], int, int]:
        """The positional arguments of `tasks.worker.run_task` for this attempt."""
        return (self.id, self.attempt, self.type, self.args, self.timeout, self.owner_id)


def served_queues() -> list[str]:
    """The queues this process's clusters serve: Q_QUEUES, or all when empty."""
    return list(settings.Q_QUEUES)


def runnable(*, queues: Sequence[str] = (), now: datetime | None = None) -> QuerySet[Task]:
    """Queued tasks that are due and wait for no other task, in claim order
    (limits not applied). The conditions include the claim index's own
    (queued, not waiting), so every claim reads that partial index."""
    now = now or timezone.now()
    tasks = Task.objects.filter(status=Status.QUEUED, waiting=False, run_at__lte=now)
    if queues:
        tasks = tasks.filter(queue__in=list(queues))
    return tasks.order_by("-priority", "turn", "run_at", "id")


def claim(*, cluster: str, limit: int, queues: Sequence[str] = ()) -> list[Claimed]:
    """Claim up to `limit` runnable tasks for `cluster` from `queues` (all
    queues of the registered types when empty), in claim order within each
    queue.

    Queues are claimed from one at a time, starting with a different one on
    each call so that none starves the others: within one queue the claim
    reads its partial index in order, where a claim across several would
    have to sort all their queued rows.
    """
    names = list(queues) or registry.queue_names()
    claimed: list[Claimed] = []
    start = next(_rotation) % max(len(names), 1)
    for name in names[start:] + names[:start]:
        if len(claimed) >= limit:
            break
        claimed += _claim_from(name, cluster=cluster, limit=limit - len(claimed))
    return claimed


_rotation = itertools.count()


def _claim_from(queue_name: str, *, cluster: str, limit: int) -> list[Claimed]:
    now = timezone.now()
    if not _limits_may_apply(queue_name):
        return _take(_runnable_in(queue_name, now=now, limit=limit), cluster=cluster, now=now)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CLAIM_LOCK_KEY])
        ids = _pick_within_limits(queue_name=queue_name, limit=limit, now=now)
        if not ids:
            return []
        return _take(_still_queued(ids), cluster=cluster, now=now)


def claim_one(*, task_id: int, cluster: str) -> Claimed | None:
    """Claim one given task if it is runnable now, ignoring limits (inline runs)."""
    now = timezone.now()
    taken = _take(_compiled(runnable(now=now).filter(pk=task_id)), cluster=cluster, now=now)
    return taken[0] if taken else None


def is_inline() -> bool:
    """True when tasks run in the process that submits them (Q_SYNC: tests)."""
    return bool(settings.Q_CLUSTER.get("sync"))


def _limits_may_apply(queue_name: str) -> bool:
    if settings.TASKS["MAX_RUNNING_PER_USER"]:
        return True
    return any(t.is_limited and t.queue == queue_name for t in registry.all_types())


@dataclass
class _Running:
    """What runs now, counted the ways the limits count."""

    by_type: Counter = field(default_factory=Counter)
    by_key: Counter = field(default_factory=Counter)
    by_owner: Counter = field(default_factory=Counter)

    def add(self, type_name: str, key: str, owner_id: int, n: int = 1) -> None:
        self.by_type[type_name] += n
        self.by_owner[owner_id] += n
        if key:
            self.by_key[(type_name, key)] += n


def _running_and_runnable(
    queue_name: str, *, now: datetime, limit: int
) -> tuple[_Running, list[tuple[int, str, str, int]]]:
    """What runs now, and the first `limit` runnable tasks of the queue as
    (id, type, key, owner) rows in claim order: one statement, so that the
    usual claim under limits reads all it decides on in one round trip.

    The counts are `Task.objects.filter(status=IN_PROGRESS).values_list(
    "type", "concurrency_key", "owner_id").annotate(Count("pk"))`, the rows
    `runnable(queues=[queue_name], now=now)[:limit]`'s (tests/test_queue.py
    holds them to those); the first column tells which is which.
    """
    rows = statements.fetch(
        (
            _running_and_runnable_sql(connection.vendor),
            [Status.IN_PROGRESS, *_runnable_params(queue_name, now=now, limit=limit)],
        )
    )
    running = _Running()
    candidates = []
    for is_candidate, type_name, key, owner_id, number, priority, turn, run_at in rows:
        if not is_candidate:
            running.add(type_name, key, owner_id, number)
            continue
        # A UNION promises no order: sort by the claim order's own columns
        # (raw run_at values compare correctly within one database).
        candidates.append(((-priority, turn, run_at, number), (number, type_name, key, owner_id)))
    candidates.sort(key=lambda pair: pair[0])
    return running, [row for _, row in candidates]


def _pick_within_limits(*, queue_name: str, limit: int, now: datetime) -> list[int]:
    """Ids of up to `limit` runnable tasks that the limits let start now.

    Types, keys and owners that are full are left out of the query itself,
    so a backlog of over-limit tasks never hides runnable tasks behind it.
    """
    per_user = settings.TASKS["MAX_RUNNING_PER_USER"]
    window = max(limit * WINDOW_FACTOR, MIN_WINDOW)
    running, rows = _running_and_runnable(queue_name, now=now, limit=window)
    types = {t.name: t for t in registry.all_types()}
    picked: list[int] = []
    # Each round either fills the claim or learns one more full type, key or
    # owner to leave out; a handful of rounds is always enough in practice.
    for round_number in range(8):
        if round_number:
            full_types = [
                name
                for name, t in types.items()
                if t.concurrency is not None and running.by_type[name] >= t.concurrency
            ]
            full_keys = [
                (name, key)
                for (name, key), n in running.by_key.items()
                if (key_limit := _key_limit(types.get(name))) is not None and n >= key_limit
            ]
            full_owners = (
                [owner for owner, n in running.by_owner.items() if n >= per_user]
                if per_user
                else []
            )
            left_out = _leaving_out(queue_name, now, picked, full_types, full_owners, full_keys)
            rows = list(left_out[:window])
        for pk, type_name, key, owner_id in rows:
            task_type = types.get(type_name)
            if task_type and task_type.concurrency:
                if running.by_type[type_name] >= task_type.concurrency:
                    continue
            if key and task_type and task_type.key_concurrency:
                if running.by_key[(type_name, key)] >= task_type.key_concurrency:
                    continue
            if per_user and running.by_owner[owner_id] >= per_user:
                continue
            picked.append(pk)
            running.add(type_name, key, owner_id)
            if len(picked) >= limit:
                return picked
        if len(rows) < window:
            break  # nothing else is runnable
    return picked


def _leaving_out(
    queue_name: str,
    now: datetime,
    picked: list[int],
    full_types: list[str],
    full_owners: list[int],
    full_keys: list[tuple[str, str]],
) -> QuerySet:
    """The runnable tasks of the queue, without those picked already and
    those of full types, owners and keys, as (id, type, key, owner) rows."""
    candidates = runnable(queues=[queue_name], now=now).exclude(pk__in=picked)
    if full_types:
        candidates = candidates.exclude(type__in=full_types)
    if full_owners:
        candidates = candidates.exclude(owner_id__in=full_owners)
    for name, key in full_keys:
        candidates = candidates.exclude(Q(type=name) & Q(concurrency_key=key))
    return candidates.values_list(*_PICK_COLUMNS)


_PICK_COLUMNS = ("id", "type", "concurrency_key", "owner")


def _key_limit(task_type: registry.TaskType | None) -> int | None:
    return task_type.key_concurrency if task_type is not None else None


def _compiled(candidates: QuerySet[Task]) -> statements.Statement:
    """The ids of `candidates` as a SELECT, built by the ORM."""
    sql, params = candidates.values("pk").query.get_compiler(connection=connection).as_sql()
    return sql, list(params)


def _runnable_in(queue_name: str, *, now: datetime, limit: int) -> statements.Statement:
    """The SELECT of `runnable(queues=[queue_name], now=now)[:limit]`'s ids,
    written once per database: it is in
    every claim, and building it through the ORM each time cost more than
    running it (tasks.statements says why that matters; tests/test_queue.py
    holds the two to the same rows)."""
    return _runnable_sql(connection.vendor, ("id",)), _runnable_params(
        queue_name, now=now, limit=limit
    )


def _runnable_params(queue_name: str, *, now: datetime, limit: int) -> list[Any]:
    """The parameters of `_runnable_sql`, in its order."""
    return [statements.prep("run_at", now), Status.QUEUED, queue_name, limit]


@functools.cache
def _runnable_sql(vendor: str, columns: tuple[str, ...]) -> str:
    # `vendor` keys the cache: the quoting is the database's. The conditions
    # are the claim index's own (queued, not waiting), as in `runnable`.
    c = statements.column
    return (
        f"SELECT {', '.join(map(c, columns))} FROM {statements.table()} "  # noqa: S608 (names from the model)
        f"WHERE {c('run_at')} <= %s AND {c('status')} = %s AND NOT {c('waiting')} "
        f"AND {c('queue')} = %s "
        f"ORDER BY {c('priority')} DESC, {c('turn')} ASC, {c('run_at')} ASC, {c('id')} ASC "
        f"LIMIT %s"
    )


def _still_queued(ids: list[int]) -> statements.Statement:
    """The SELECT of `Task.objects.filter(pk__in=ids, status=QUEUED)`'s ids."""
    return _still_queued_sql(connection.vendor, len(ids)), [*ids, Status.QUEUED]


@functools.cache
def _still_queued_sql(vendor: str, count: int) -> str:
    c = statements.column
    return (
        f"SELECT {c('id')} FROM {statements.table()} "  # noqa: S608 (names from the model)
        f"WHERE {c('id')} IN ({', '.join(['%s'] * count)}) AND {c('status')} = %s"
    )


@functools.cache
def _running_and_runnable_sql(vendor: str) -> str:
    c = statements.column
    grouped = ", ".join(c(name) for name in ("type", "concurrency_key", "owner"))
    candidates = _runnable_sql(
        vendor, ("type", "concurrency_key", "owner", "id", "priority", "turn", "run_at")
    )
    return (
        f"SELECT 0, {grouped}, COUNT(*), NULL, NULL, NULL FROM {statements.table()} "  # noqa: S608 (names from the model)
        f"WHERE {c('status')} = %s GROUP BY {grouped} "
        f"UNION ALL SELECT 1, candidates.* FROM ({candidates}) candidates"
    )


def _take(candidates: statements.Statement, *, cluster: str, now: datetime) -> list[Claimed]:
    """The claim statement: move the rows that the SELECT `candidates` picks
    and that are still queued to in_progress for `cluster`, and return them
    in claim order.

    One UPDATE ... WHERE id IN (<candidates>) RETURNING, so the claim costs
    one round trip. On PostgreSQL it locks the rows it picks and skips those
    another cluster is taking.
    """
    select, select_params = candidates
    if connection.features.has_select_for_update_skip_locked:
        select += " FOR UPDATE SKIP LOCKED"
    sets = {
        "status": Status.IN_PROGRESS,
        "claimed_by": cluster,
        "worker": "",
        "lease_expires_at": now + timedelta(seconds=settings.TASKS["LEASE_SECONDS"]),
        "started_at": None,
        "finished_at": None,
        "progress": 0,
        "progress_message": "",
        "updated_at": now,
    }
    params = [statements.prep(name, value) for name, value in sets.items()]
    sql = _claim_sql(connection.vendor, tuple(sets)).replace("{select}", select)
    rows = statements.fetch((sql, [*params, *select_params]))
    claimed = []
    for pk, attempt, type_name, args, timeout, owner_id, priority, turn, run_at in rows:
        if isinstance(args, str):  # JSON comes back as text from SQLite and psycopg
            args = json.loads(args)
        # Raw run_at values compare correctly on each database (datetimes, or
        # SQLite's ISO text): they only order rows of one result here.
        claimed.append(
            (
                (-priority, turn, run_at, pk),
                Claimed(pk, attempt, type_name, args, timeout, owner_id),
            )
        )
    # RETURNING follows no order: hand the tasks out in claim order.
    return [c for _, c in sorted(claimed, key=lambda pair: pair[0])]


@functools.cache
def _claim_sql(vendor: str, assigned: tuple[str, ...]) -> str:
    """The claim's UPDATE, with `{select}` where the candidates go and a
    parameter per `assigned` field."""
    column = {name: statements.bare_column(name) for name in _CLAIM_COLUMNS}
    # PostgreSQL may run an IN (subquery) again for each row it updates (a
    # nested-loop semi-join), and each run locks and returns rows the last
    # one had not, so the LIMIT would bound nothing: ARRAY() runs it once.
    # The rows it returns were queued when it locked them (the candidates
    # ask for queued rows; a lock re-checks that on the row's latest
    # version) and stay locked, so the UPDATE does not ask again: asking
    # lets the planner read the claim's partial index, every queued row,
    # for those few ids whenever statistics say the queue is short.
    # SQLite runs the statement inside its one write transaction, so the
    # candidates are still queued when their rows are updated; there too,
    # asking again made it read every queued row through the status index
    # instead of looking up the few ids.
    if vendor == "postgresql":
        where = f"{column['id']} = ANY(ARRAY({{select}}))"
    else:
        where = f"{column['id']} IN ({{select}})"
    assignments = [f"{column['attempts']} = {column['attempts']} + 1"]
    assignments += [f"{column[name]} = %s" for name in assigned]
    returned = ("id", "attempts", "type", "args", "timeout", "owner", "priority", "turn", "run_at")
    return (
        f"UPDATE {statements.table()} SET {', '.join(assignments)} "  # noqa: S608 (names from the model)
        f"WHERE {where} "
        f"RETURNING {', '.join(column[name] for name in returned)}"
    )


_CLAIM_COLUMNS = (
    "id",
    "status",
    "attempts",
    "claimed_by",
    "worker",
    "lease_expires_at",
    "started_at",
    "finished_at",
    "progress",
    "progress_message",
    "updated_at",
    "type",
    "args",
    "timeout",
    "owner",
    "priority",
    "turn",
    "run_at",
)


# --- Wake-ups ------------------------------------------------------------------------


def announce_work(queue_name: str) -> None:
    """Tell idle clusters that `queue_name` has new runnable work.

    On PostgreSQL a NOTIFY, delivered when the current transaction commits
    (never before the row is visible); elsewhere nothing: clusters poll.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, queue_name])
