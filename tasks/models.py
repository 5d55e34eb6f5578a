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
        each, written once per shape (`_Statements`) instead of built by the
        ORM per call, which cost a worker more time than the database spent
        running it.
        """
        sql, params = self._update_one(pk, target, expect, changes, returning=True)
        connection = connections[self.db]
        row = _run_hot(connection, sql, params)
        if row is None:
            return None
        shape = _statements(connection, self.model)
        values = []
        for (col, converters), value in zip(shape.converters, row, strict=True):
            for convert in converters:
                value = convert(value, col, connection)
            values.append(value)
        return self.model.from_db(self.db, shape.attnames, values)

    def transition_pk(self, pk: int, target: str, *, expect: dict, **changes) -> bool:
        """`transition_one` without the row: True if it moved."""
        sql, params = self._update_one(pk, target, expect, changes)
        return _run_hot(connections[self.db], sql, params, rowcount=True) == 1

    def _update_one(self, pk, target, expect, changes, returning=False) -> tuple[str, list]:
        allowed = _checked_sources(target, {**changes, **expect})
        connection = connections[self.db]
        sql, set_fields, expect_fields = _statements(connection, self.model).update(
            tuple(changes), tuple(expect), len(allowed), returning
        )
        values = (target, timezone.now(), *changes.values())
        params = [
            field.get_db_prep_save(value, connection)
            for field, value in zip(set_fields, values, strict=True)
        ]
        params += [pk, *allowed]
        params += [
            field.get_db_prep_value(value, connection)
            for field, value in zip(expect_fields, expect.values(), strict=True)
        ]
        return sql, params

    def insert_one(self, task: Task, *, unless_unfinished: int | None = None) -> Task | None:
        """Insert a new task row and set its id: what `task.save()` does for
        a new row, as one statement written once (and prepared on
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
        shape = _statements(connection, self.model)
        sql, fields = shape.insert(capped=bool(unless_unfinished))
        params = [
            field.get_db_prep_save(field.pre_save(task, add=True), connection) for field in fields
        ]
        if unless_unfinished:
            params += [task.owner_id, *sorted(UNFINISHED), unless_unfinished - 1]
        row = _run_hot(connection, sql, params)
        if row is None:
            return None
        task.pk = row[0]
        task._state.adding = False
        task._state.db = self.db
        return task

    def unfinished(self) -> TaskQuerySet:
        return self.filter(status__in=UNFINISHED)


class _Statements:
    """The hand-written statements of one model on one database connection,
    each built once per shape (which columns it sets and checks) and kept:
    the text of a statement never changes for a given shape, only its
    parameters, and quoting names and looking up fields for every task cost
    a measurable share of a worker's time.
    """

    def __init__(self, connection, model) -> None:
        # Only the name quoting and the converters are taken from the
        # connection (neither depends on its state): connections are per
        # thread, the statements are the same for all of them.
        self.meta, self.quote = model._meta, connection.ops.quote_name
        quote = self.quote
        fields = self.meta.concrete_fields
        table = self.meta.db_table
        # The columns in the model's order: from_db takes the values so.
        self.returning = ", ".join(quote(field.column) for field in fields)
        self.attnames = [field.attname for field in fields]
        self.converters = []
        for field in fields:
            col = field.get_col(table)
            converters = connection.ops.get_db_converters(col)
            self.converters.append((col, converters + field.get_db_converters(connection)))
        self._cache: dict[tuple, tuple] = {}

    def _column(self, name: str):
        field = self.meta.get_field(name)
        return field, self.quote(field.column)

    def update(self, changes, expect, sources, returning):
        """An UPDATE of one row by id from one of `sources` states: (sql,
        fields of the SET values, fields of the `expect` values)."""
        key = ("update", changes, expect, sources, returning)
        if key not in self._cache:
            self._cache[key] = self._update(changes, expect, sources, returning)
        return self._cache[key]

    def _update(self, changes, expect, sources, returning):
        quote = self.quote
        set_fields, sets = [], []
        for name in ("status", "updated_at", *changes):
            field, col = self._column(name)
            set_fields.append(field)
            sets.append(f"{col} = %s")
        # `status || ''` keeps the status indexes out of the plan. Right after
        # a burst of submissions, before PostgreSQL's statistics catch up, it
        # would otherwise find the row through an index on status, reading
        # the entry of every queued task to claim one of them.
        wheres = [
            f"{quote(self.meta.pk.column)} = %s",
            f"({self._column('status')[1]} || '') IN ({', '.join(['%s'] * sources)})",
        ]
        expect_fields = []
        for name in expect:
            field, col = self._column(name)
            expect_fields.append(field)
            wheres.append(f"{col} = %s")
        sql = (
            f"UPDATE {quote(self.meta.db_table)} SET {', '.join(sets)} WHERE {' AND '.join(wheres)}"  # noqa: S608 (names from the model)
        )
        if returning:
            sql += f" RETURNING {self.returning}"
        return sql, set_fields, expect_fields

    def insert(self, *, capped: bool):
        """An INSERT of a new row returning its id: (sql, fields in order)."""
        key = ("insert", capped)
        if key not in self._cache:
            self._cache[key] = self._insert(capped)
        return self._cache[key]

    def _insert(self, capped: bool):
        quote = self.quote
        table = quote(self.meta.db_table)
        fields = [field for field in self.meta.concrete_fields if not field.primary_key]
        columns = ", ".join(quote(field.column) for field in fields)
        values = ", ".join(["%s"] * len(fields))
        if capped:
            owner, status = self._column("owner")[1], self._column("status")[1]
            sql = (
                f"INSERT INTO {table} ({columns}) SELECT {values} WHERE NOT EXISTS ("  # noqa: S608
                f"SELECT 1 FROM {table} WHERE {owner} = %s AND {status} IN (%s, %s) "
                "LIMIT 1 OFFSET %s)"
            )
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({values})"  # noqa: S608
        return sql + f" RETURNING {quote(self.meta.pk.column)}", fields


_shapes: dict[tuple, _Statements] = {}


def _statements(connection, model) -> _Statements:
    key = (connection.alias, connection.vendor, model)
    if key not in _shapes:
        _shapes[key] = _Statements(connection, model)
    return _shapes[key]


def _run_hot(connection, sql: str, params: list, *, rowcount: bool = False):
    """Run one of the statements every task runs: its first row (or, with
    `rowcount`, how many rows it touched).

    On PostgreSQL, through a psycopg cursor with server-side binding on
    Django's own connection (same transaction), so that the statement is
    prepared once per connection: parsing and planning it again for every
    task took half of the database's time. Errors are still Django's
    (wrap_database_errors). Elsewhere, Django's cursor.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount if rowcount else cursor.fetchone()
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        started = time.monotonic()
        try:
            cursor.execute(sql, params, prepare=True)
            return cursor.rowcount if rowcount else cursor.fetchone()
        finally:
            if connection.queries_logged:  # DEBUG, or a test capturing queries
                connection.queries_log.append(
                    {"sql": f"{sql} -- {params!r}", "time": f"{time.monotonic() - started:.3f}"}
                )


class Task(models.Model):
    # No index of its own: every index in Meta that starts with the owner
    # (task_owner_id first) serves lookups by owner and the foreign key's
    # checks, and each index is one more entry to write on every insert and
    # status change.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks", db_index=False
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
