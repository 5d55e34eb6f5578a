"""The Task record and its legal state transitions.

`Task.status` is written only by `TaskQuerySet.transition` (and its one-row
forms `transition_one` and `transition_pk`, hand-written for the path every
task takes), which turns a transition into one conditional UPDATE: a row
moves only if its current state may legally become the new one (and matches
whatever else the caller filters on), so two processes racing on one task can
never both win.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from django.conf import settings
from django.db import connections, models
from django.utils import timezone


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# from-state -> states it may move to. IN_PROGRESS -> QUEUED is an automatic
# retry or a lost worker's task going back to the queue; FAILED/CANCELLED ->
# QUEUED is a manual retry. COMPLETED is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.QUEUED: frozenset({Status.IN_PROGRESS, Status.CANCELLED, Status.FAILED}),
    Status.IN_PROGRESS: frozenset(
        {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.QUEUED}
    ),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
    Status.COMPLETED: frozenset(),
}
FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
UNFINISHED = frozenset({Status.QUEUED, Status.IN_PROGRESS})


class IllegalTransition(Exception):
    pass


def sources_of(target: str) -> list[str]:
    """States from which `target` may be reached."""
    if target not in TRANSITIONS:
        raise IllegalTransition(f"Unknown status {target!r}.")
    return [source for source, targets in TRANSITIONS.items() if target in targets]


def _checked_sources(target: str, columns: dict) -> list[str]:
    """The states `target` may be reached from, for a write of `columns`."""
    if "status" in columns:
        raise IllegalTransition("Pass the new status as `target`.")
    allowed = sources_of(target)
    if not allowed:
        raise IllegalTransition(f"No state may move to {target!r}.")
    return allowed


class TaskQuerySet(models.QuerySet):
    def transition(self, target: str, **changes) -> int:
        """Move the rows of this queryset that may legally become `target`.

        Returns how many rows moved. Rows in a state that cannot reach
        `target` are left alone, so callers filter on the state they expect
        and treat 0 as "somebody else got there first".
        """
        allowed = _checked_sources(target, changes)
        return self.filter(status__in=allowed).update(
            status=target, updated_at=timezone.now(), **changes
        )

    def transition_one(self, pk: int, target: str, *, expect: dict, **changes) -> Task | None:
        """`transition` for one row that also returns it, as it is after the
        move, from the same statement (UPDATE ... RETURNING); None if it did
        not move.

        `expect` holds the other columns the row must still have (equality);
        `changes` are plain values, not expressions. This and `transition_pk`
        serve the path every task takes (claim, complete): one statement
        each, written here once instead of built by the ORM per call, which
        cost a worker more time than the database spent running it.
        """
        connection = connections[self.db]
        fields = self.model._meta.concrete_fields
        # The columns in the model's order: from_db takes the values so.
        returning = ", ".join(connection.ops.quote_name(field.column) for field in fields)
        sql, params = self._update_one(pk, target, expect, changes, returning=returning)
        with _hot_cursor(connection) as cursor:
            cursor.execute(sql, params, **_prepared(connection))
            row = cursor.fetchone()
        if row is None:
            return None
        table = self.model._meta.db_table
        values = []
        for field, value in zip(fields, row, strict=True):
            col = field.get_col(table)
            for convert in connection.ops.get_db_converters(col) + field.get_db_converters(
                connection
            ):
                value = convert(value, col, connection)
            values.append(value)
        return self.model.from_db(self.db, [field.attname for field in fields], values)

    def transition_pk(self, pk: int, target: str, *, expect: dict, **changes) -> bool:
        """`transition_one` without the row: True if it moved."""
        connection = connections[self.db]
        sql, params = self._update_one(pk, target, expect, changes)
        with _hot_cursor(connection) as cursor:
            cursor.execute(sql, params, **_prepared(connection))
            return cursor.rowcount == 1

    def _update_one(self, pk, target, expect, changes, returning=None) -> tuple[str, list]:
        allowed = _checked_sources(target, {**changes, **expect})
        connection = connections[self.db]
        meta, quote = self.model._meta, connection.ops.quote_name

        def column(name: str):
            field = meta.get_field(name)
            return field, quote(field.column)

        sets, params = [], []
        for name, value in {"status": target, "updated_at": timezone.now(), **changes}.items():
            field, col = column(name)
            sets.append(f"{col} = %s")
            params.append(field.get_db_prep_save(value, connection))
        # `status || ''` keeps the status indexes out of the plan. Right after
        # a burst of submissions, before PostgreSQL's statistics catch up, it
        # would otherwise find the row through an index on status, reading
        # the entry of every queued task to claim one of them.
        wheres = [
            f"{quote(meta.pk.column)} = %s",
            f"({column('status')[1]} || '') IN ({', '.join(['%s'] * len(allowed))})",
        ]
        params += [pk, *allowed]
        for name, value in expect.items():
            field, col = column(name)
            wheres.append(f"{col} = %s")
            params.append(field.get_db_prep_value(value, connection))
        sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} WHERE {' AND '.join(wheres)}"  # noqa: S608 (names from the model)
        if returning:
            sql += f" RETURNING {returning}"
        return sql, params

    def insert_one(self, task: Task, *, unless_unfinished: int | None = None) -> Task | None:
        """Insert a new task row and set its id: what `task.save()` does for
        a new row, as one statement written here once (and prepared on
        PostgreSQL), because building it through the ORM cost more than the
        database's work on the path every submit takes. It sends no model
        signals; nothing listens to Task's.

        With `unless_unfinished=n`, the same statement inserts nothing, and
        None is returned, when the owner already has n queued or running
        tasks: the cap costs no round trip of its own, and two submits cannot
        both pass it on the same last free place. "Is there an n-th
        unfinished task?" reads at most n entries of the owner+status index
        and never counts a whole backlog.
        """
        connection = connections[self.db]
        meta, quote = self.model._meta, connection.ops.quote_name
        table = quote(meta.db_table)
        fields = [field for field in meta.concrete_fields if not field.primary_key]
        params = [
            field.get_db_prep_save(field.pre_save(task, add=True), connection) for field in fields
        ]
        columns = ", ".join(quote(field.column) for field in fields)
        values = ", ".join(["%s"] * len(fields))
        if unless_unfinished:
            owner, status = (
                quote(meta.get_field("owner").column),
                quote(meta.get_field("status").column),
            )
            sql = (
                f"INSERT INTO {table} ({columns}) SELECT {values} WHERE NOT EXISTS ("  # noqa: S608
                f"SELECT 1 FROM {table} WHERE {owner} = %s AND {status} IN (%s, %s) "
                "LIMIT 1 OFFSET %s)"
            )
            params += [task.owner_id, *sorted(UNFINISHED), unless_unfinished - 1]
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({values})"  # noqa: S608
        sql += f" RETURNING {quote(meta.pk.column)}"
        with _hot_cursor(connection) as cursor:
            cursor.execute(sql, params, **_prepared(connection))
            row = cursor.fetchone()
        if row is None:
            return None
        task.pk = row[0]
        task._state.adding = False
        task._state.db = self.db
        return task

    def unfinished(self) -> TaskQuerySet:
        return self.filter(status__in=UNFINISHED)


@contextmanager
def _hot_cursor(connection):
    """A cursor for the statements every task runs.

    On PostgreSQL, a psycopg cursor with server-side binding on Django's own
    connection (same transaction), so that the statement is prepared once
    per connection: parsing and planning it again for every task took half
    of the database's time. Errors are still Django's (wrap_database_errors).
    Elsewhere, Django's cursor.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        if connection.queries_logged:  # DEBUG, or a test capturing queries
            yield _LoggedCursor(connection, cursor)
        else:
            yield cursor


class _LoggedCursor:
    """Records statements in connection.queries, as Django's debug cursor does."""

    def __init__(self, connection, cursor) -> None:
        self.connection, self.cursor = connection, cursor

    def execute(self, sql, params, **kwargs):
        started = time.monotonic()
        try:
            return self.cursor.execute(sql, params, **kwargs)
        finally:
            self.connection.queries_log.append(
                {"sql": f"{sql} -- {params!r}", "time": f"{time.monotonic() - started:.3f}"}
            )

    def __getattr__(self, name):
        return getattr(self.cursor, name)


def _prepared(connection) -> dict:
    return {"prepare": True} if connection.vendor == "postgresql" else {}


class Task(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks"
    )
    type = models.CharField(max_length=100)
    args = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    priority = models.SmallIntegerField(default=0)

    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    output_truncated = models.BooleanField(default=False)
    error = models.JSONField(null=True, blank=True)

    attempts = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveSmallIntegerField(default=0)
    # Automatic retries still allowed; a manual retry refills it.
    retries_left = models.PositiveSmallIntegerField(default=0)
    # Times the task went back to the queue because its worker vanished;
    # these do not use up retries, but are capped so a task that kills its
    # worker every time still ends.
    lost_count = models.PositiveSmallIntegerField(default=0)
    timeout = models.PositiveIntegerField()

    # When the task may start (a delayed run or a retry's backoff), and when
    # its current message went to the transport (None: not sent yet).
    run_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # The running worker renews the lease; an expired lease means it is gone.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    # The name the transport knows the task by (django-q2's task name).
    transport_id = models.CharField(max_length=64, blank=True, default="")

    # NULL, not "", for "no key": the unique constraint must ignore keyless tasks.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The API lists a user's tasks newest first, optionally by status/type.
            models.Index(fields=["owner", "-id"], name="task_owner_id"),
            models.Index(fields=["owner", "status", "-id"], name="task_owner_status_id"),
            models.Index(fields=["owner", "type", "-id"], name="task_owner_type_id"),
            # The maintenance loop's scans.
            models.Index(fields=["status", "lease_expires_at"], name="task_status_lease"),
            models.Index(fields=["status", "enqueued_at", "run_at"], name="task_status_due"),
            models.Index(fields=["status", "finished_at"], name="task_status_finished"),
            # /metrics counts tasks by status and type from this index alone.
            models.Index(fields=["status", "type"], name="task_status_type"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"], name="task_owner_idempotency_key"
            ),
        ]

    def __str__(self) -> str:
        return f"Task {self.pk} ({self.type}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class TaskAttempt(models.Model):
    """One run of a task by a worker: when, where, and how it ended."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Worker lost"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RUNNING)
    worker = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [
            models.UniqueConstraint(fields=["task", "number"], name="attempt_task_number"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of task {self.task_id}"


class WorkerHeartbeat(models.Model):
    """A worker process that is alive, as seen by its maintenance loop."""

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.name
