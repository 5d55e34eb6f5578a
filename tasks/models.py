"""The Task record, which is also the queue, and its legal state transitions.

`Task.status` is written only by `TaskQuerySet.transition` (a conditional
UPDATE: a row moves only if its current state may legally become the new
one and it still matches whatever else the caller filters on, so two
processes racing on one task can never both win) and by the claim in
`tasks.queue`, the one raw statement, which moves queued rows to
in_progress under the same rule.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# from-state -> states it may move to. IN_PROGRESS -> QUEUED is an automatic
# retry, a lost worker's task going back to the queue, or a claim released
# before its worker started it; FAILED/CANCELLED -> QUEUED is a manual retry.
# COMPLETED is final.
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

DEFAULT_QUEUE = "default"
MIN_PRIORITY, MAX_PRIORITY = -100, 100


class DependencyFailure(models.TextChoices):
    CANCEL = "cancel", "Cancel the dependant"
    RUN = "run", "Run the dependant anyway"


class IllegalTransition(Exception):
    pass


def sources_of(target: str) -> list[str]:
    """States from which `target` may be reached."""
    if target not in TRANSITIONS:
        raise IllegalTransition(f"Unknown status {target!r}.")
    return [source for source, targets in TRANSITIONS.items() if target in targets]


class TaskQuerySet(models.QuerySet):
    def transition(self, target: str, **changes) -> int:
        """Move the rows of this queryset that may legally become `target`.

        Returns how many rows moved. Rows in a state that cannot reach
        `target` are left alone, so callers filter on the state they expect
        and treat 0 as "somebody else got there first".
        """
        if "status" in changes:
            raise IllegalTransition("Pass the new status as `target`.")
        allowed = sources_of(target)
        if not allowed:
            raise IllegalTransition(f"No state may move to {target!r}.")
        return self.filter(status__in=allowed).update(
            status=target, updated_at=timezone.now(), **changes
        )

    def unfinished(self) -> TaskQuerySet:
        return self.filter(status__in=UNFINISHED)


class Task(models.Model):
    # No index of its own: every index in Meta that starts with the owner
    # serves lookups by owner and the foreign key's checks.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    type = models.CharField(max_length=100)
    # The type's queue when submitted; a cluster serves the queues in Q_QUEUES.
    queue = models.CharField(max_length=100, default=DEFAULT_QUEUE)
    args = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # -100..100, higher first.
    priority = models.SmallIntegerField(default=0)
    # The owner's turn among equal-priority tasks (fairness): a task of an
    # owner with nothing queued takes the turn now being served; one behind
    # the owner's own backlog takes the turn after that backlog's last.
    turn = models.BigIntegerField(default=0)
    # Tasks of one type sharing a key run at most the type's key_concurrency at once.
    concurrency_key = models.CharField(max_length=200, blank=True, default="")
    # NULL, not "", for "no key": the unique constraint must ignore keyless tasks.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001

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

    # When the task may start: at once, a delayed run, or a retry's backoff.
    run_at = models.DateTimeField(default=timezone.now)
    # Queued but not claimable: some task it depends on has not completed
    # yet (tasks.dependencies). Part of the claim index's condition, so the
    # claim never reads a waiting task.
    # db_default too: rows inserted by plain SQL (bulk loads) get it as well.
    waiting = models.BooleanField(default=False, db_default=False)
    # Some task depends on this one: set when such a task is created (which
    # locks this row), so that completing a task nobody waits for stays one
    # UPDATE (tasks.lifecycle.complete_attempt).
    has_dependants = models.BooleanField(default=False, db_default=False)
    # What a parent's failure or cancellation does to this task.
    on_dependency_failure = models.CharField(
        max_length=10,
        choices=DependencyFailure.choices,
        default=DependencyFailure.CANCEL,
        db_default=DependencyFailure.CANCEL,
    )
    cancel_requested = models.BooleanField(default=False)
    # The cluster that claimed the current attempt, and the worker process
    # running it (empty until that worker starts it).
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")
    # Renewed by the running worker; an expired lease means the attempt is
    # gone (or was never started: its cluster died holding the claim).
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    # A fire of a schedule: which one and for which time. The pair is unique,
    # so however many clusters fire a schedule at once, a time fires one task.
    schedule = models.ForeignKey(
        "Schedule",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tasks",
        db_index=False,  # the (schedule, scheduled_for) constraint's index serves it
    )
    scheduled_for = models.DateTimeField(null=True, blank=True)

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
            # Event streams read a user's tasks changed since their cursor;
            # without it each read walked all of the user's tasks.
            models.Index(fields=["owner", "updated_at"], name="task_owner_updated"),
            # The claim reads one queue's queued rows in claim order; partial,
            # so finished tasks never weigh on it.
            models.Index(
                fields=["queue", "-priority", "turn", "run_at", "id"],
                condition=Q(status="queued", waiting=False),
                name="task_claim_runnable",
            ),
            # The reaper's scan, and the running counts behind the limits.
            models.Index(fields=["status", "lease_expires_at"], name="task_status_lease"),
            models.Index(fields=["status", "finished_at"], name="task_status_finished"),
            # Retention: one type's oldest finished tasks (partial: only
            # finished tasks have a finished_at).
            models.Index(
                fields=["type", "finished_at"],
                condition=Q(finished_at__isnull=False),
                name="task_type_finished",
            ),
            # /metrics counts tasks by status and type from this index alone.
            models.Index(fields=["status", "type"], name="task_status_type"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"], name="task_owner_idempotency_key"
            ),
            # Each time of a schedule fires at most one task.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"], name="task_schedule_scheduled_for"
            ),
            # At most one unfinished task per owner, type and unique key.
            models.UniqueConstraint(
                fields=["owner", "type", "unique_key"],
                condition=Q(status__in=["queued", "in_progress"]),
                name="task_unique_key_unfinished",
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


class TaskDependency(models.Model):
    """`task` runs only once `parent` completed (tasks.dependencies)."""

    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="parent_links", db_index=False
    )
    # Indexed: a finishing task looks up the tasks waiting for it.
    parent = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="child_links")

    class Meta:
        constraints = [
            # Its index serves the task's lookups too (it starts with the task).
            models.UniqueConstraint(fields=["task", "parent"], name="dependency_task_parent"),
        ]

    def __str__(self) -> str:
        return f"Task {self.task_id} after task {self.parent_id}"


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
    """A worker process that is alive, and the task it runs now."""

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.name


class Schedule(models.Model):
    """A task to submit again and again: on a cron expression in a time zone,
    or every `interval_seconds`.

    Housekeeping on every cluster fires the schedules whose `next_run_at` has
    come (tasks.schedules); a fire is a Task row with `schedule` and
    `scheduled_for`, unique together.
    """

    class CatchUp(models.TextChoices):
        SKIP = "skip", "Skip missed times"
        ONCE = "once", "One task for all missed times"
        ALL = "all", "Each missed time"

    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip while the last task is unfinished"
        ALLOW = "allow", "Allow"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="schedules",
        db_index=False,  # schedule_owner_id serves it
    )
    name = models.CharField(max_length=200, blank=True, default="")
    type = models.CharField(max_length=100)
    args = models.JSONField(default=dict, blank=True)
    # Exactly one of the two is set.
    cron = models.CharField(max_length=200, blank=True, default="")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    # An IANA name; cron times are read in it (the API calls it `timezone`).
    time_zone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    catch_up = models.CharField(max_length=10, choices=CatchUp.choices, default=CatchUp.ONCE)
    overlap = models.CharField(max_length=10, choices=Overlap.choices, default=Overlap.SKIP)

    # The options of each task it fires (None: the type's default).
    timeout = models.PositiveIntegerField(null=True, blank=True)
    max_retries = models.PositiveSmallIntegerField(null=True, blank=True)
    priority = models.SmallIntegerField(default=0)
    concurrency_key = models.CharField(max_length=200, blank=True, default="")

    # The next time to fire; NULL while disabled.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    fired_count = models.PositiveIntegerField(default=0)
    # Times not fired: missed under catch_up skip, or overlapping under overlap skip.
    skipped_count = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["owner", "-id"], name="schedule_owner_id"),
            # Housekeeping asks "is any schedule due?" several times a second:
            # partial, so it reads only enabled schedules, soonest first.
            models.Index(fields=["next_run_at"], condition=Q(enabled=True), name="schedule_due"),
        ]

    def __str__(self) -> str:
        return self.name or f"Schedule {self.pk} ({self.type})"

    @property
    def when(self) -> str:
        return self.cron or f"every {self.interval_seconds}s"


class TaskLog(models.Model):
    """One line a task wrote through `ctx.log` (tasks.logs).

    `seq` counts a task's lines from 1 without gaps, across its attempts, so
    a reader pages with `after=<seq>`. When a task goes over its caps the
    oldest lines are deleted and one marker line takes the place (and seq)
    of the newest line dropped.
    """

    task = models.ForeignKey(
        Task,
        on_delete=models.CASCADE,
        related_name="log_lines",
        db_index=False,  # the (task, seq) constraint's index serves it
    )
    seq = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField(default=0)
    level = models.CharField(max_length=10, default="INFO")
    at = models.DateTimeField(default=timezone.now)
    message = models.TextField()
    # UTF-8 bytes of the message, summed against the byte cap.
    size = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["task", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["task", "seq"], name="tasklog_task_seq"),
        ]

    def __str__(self) -> str:
        return f"Line {self.seq} of task {self.task_id}"


class IdempotentBatch(models.Model):
    """A batch sent with an Idempotency-Key: the same key and body again,
    within TASK_IDEMPOTENCY_HOURS, answer with these tasks instead of making
    more (tasks.services.submit_batch). Housekeeping deletes expired ones."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # the (owner, key) constraint's index serves it
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    task_ids = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="batch_owner_key"),
        ]

    def __str__(self) -> str:
        return f"batch {self.key!r} of user {self.owner_id}"
