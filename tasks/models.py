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
    cancel_requested = models.BooleanField(default=False)
    # The cluster that claimed the current attempt, and the worker process
    # running it (empty until that worker starts it).
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    worker = models.CharField(max_length=200, blank=True, default="")
    # Renewed by the running worker; an expired lease means the attempt is
    # gone (or was never started: its cluster died holding the claim).
    lease_expires_at = models.DateTimeField(null=True, blank=True)

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
            # The claim reads one queue's queued rows in claim order; partial,
            # so finished tasks never weigh on it.
            models.Index(
                fields=["queue", "-priority", "turn", "run_at", "id"],
                condition=Q(status="queued"),
                name="task_claim_queue",
            ),
            # The reaper's scan, and the running counts behind the limits.
            models.Index(fields=["status", "lease_expires_at"], name="task_status_lease"),
            models.Index(fields=["status", "finished_at"], name="task_status_finished"),
            # /metrics counts tasks by status and type from this index alone.
            models.Index(fields=["status", "type"], name="task_status_type"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"], name="task_owner_idempotency_key"
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
