"""Schedules: when they fire, firing them, and what users do with them.

Cron expressions are read by cronsim: a small, well-kept library with
standard five-field semantics (Debian cron's, `L` and `#` included) that
evaluates an expression in any time zone and handles DST the way cron
does: a time skipped by a spring-forward gap runs right after the gap, and
a time repeated by a fall-back runs once. croniter does the same job but is
larger and its maintenance has been uncertain; cronsim has no dependencies.
cronsim also takes a six-field form with seconds; only five fields are
accepted here (the contract), so an expression means what cron means.

Firing: each cluster's broker calls `fire_due_schedules` several times a
second (TASK_SCHEDULE_POLL_SECONDS). The look for due schedules is one read
of a partial index, without a transaction; only when something is due does
it lock the due rows (SKIP LOCKED on PostgreSQL, SQLite's write lock
elsewhere), fire them and move their `next_run_at` on. A fire is a Task row
with `schedule` and `scheduled_for`, unique together in the database, so a
time fires one task however many clusters race for it.

After downtime (the clusters stopped, or a stall longer than an interval)
several times are due at once. The latest one fires as usual if it is
fresh (within ON_TIME_GRACE); the earlier ones are missed and `catch_up`
decides: `skip` fires none of them, `once` fires one task (for the latest
missed time), `all` fires each, at most TASK_SCHEDULE_MAX_CATCH_UP (the
most recent). With `overlap: skip` a time that comes while the schedule's
previous task is unfinished fires nothing. Times that fire nothing are
counted in `skipped_count`.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework import serializers

from . import registry, services
from .models import UNFINISHED, Schedule, Task

logger = logging.getLogger(__name__)

# A due time found this long after it came still counts as on time; older
# due times were missed (the clusters were down or stalled).
ON_TIME_GRACE = timedelta(seconds=1)
# How far back missed cron times are looked for after a long outage; older
# ones are neither fired nor counted.
CRON_LOOKBACK = timedelta(days=7)
# Due schedules fired in one transaction; the rest wait for the next pass.
FIRE_BATCH = 20


# --- Times ---------------------------------------------------------------------


# Files of the zone database that name no place: "localtime" is whatever the
# host is set to, and clusters on hosts set differently would read one
# schedule differently.
HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError when it is not one."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError("Not a time zone.")
    if name in HOST_ZONES:
        raise ValueError(f"{name!r} is this host's zone, not a place's: name the place's.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"Unknown time zone {name!r}.") from exc


def check_cron(expr: str, zone: str = "UTC") -> str:
    """The expression, normalised, if it is a valid five-field cron
    expression that fires at least once; ValueError otherwise."""
    if not isinstance(expr, str):
        raise ValueError("A cron expression is a string.")
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            "Use five fields: minute hour day-of-month month day-of-week (e.g. '*/5 * * * *')."
        )
    normalised = " ".join(fields)
    try:
        next_cron_time(normalised, zone, timezone.now())
    except (CronSimError, StopIteration) as exc:
        raise ValueError(f"Not a valid cron expression: {exc or 'it never fires'}.") from exc
    return normalised


def next_cron_time(expr: str, zone: str, after: datetime) -> datetime:
    """The first time strictly after `after` that `expr` matches, read in
    the time zone `zone`, returned in UTC."""
    local = after.astimezone(zone_of(zone))
    # Inside a fall-back's repeated hour `local` is its second pass (fold=1),
    # which cronsim does not read: it may answer with a time of the first
    # pass, before `after` (a 02:30 that ran already): the answer is then
    # the first one after it, at most an hour of minutes on.
    for moment in itertools.islice(CronSim(expr, local), 2000):
        if (moment := moment.astimezone(UTC)) > after:
            return moment
    raise ValueError(f"cron {expr!r} has no time after {after.isoformat()} in {zone}")


def next_time(schedule: Schedule, after: datetime) -> datetime:
    """The schedule's first time strictly after `after` (for an interval: one
    interval after it)."""
    if schedule.cron:
        return next_cron_time(schedule.cron, schedule.time_zone, after)
    return after + timedelta(seconds=schedule.interval_seconds or 1)


def due_times(schedule: Schedule, now: datetime, keep: int) -> tuple[list[datetime], int]:
    """The schedule's times from `next_run_at` up to `now`: the last `keep`
    of them, ascending, and how many there are in all."""
    first = schedule.next_run_at
    if first is None or first > now:
        return [], 0
    if not schedule.cron:
        step = timedelta(seconds=schedule.interval_seconds or 1)
        total = int((now - first) / step) + 1
        start = max(total - keep, 0)
        return [first + step * k for k in range(start, total)], total
    times: deque[datetime] = deque(maxlen=keep)
    moment = first
    if now - first > CRON_LOOKBACK:
        moment = next_cron_time(schedule.cron, schedule.time_zone, now - CRON_LOOKBACK)
    total = 0
    while moment <= now:
        times.append(moment)
        total += 1
        moment = next_cron_time(schedule.cron, schedule.time_zone, moment)
    return list(times), total


# --- Firing ----------------------------------------------------------------------


def fire_due_schedules(*, now: datetime | None = None, limit: int = FIRE_BATCH) -> int:
    """Fire the schedules that are due; return how many tasks were created."""
    now = now or timezone.now()
    # A deactivated user's schedules wait, fire nothing, and count what they
    # missed by their catch-up rule once the user is active again.
    due = Schedule.objects.filter(enabled=True, next_run_at__lte=now, owner__is_active=True)
    # The common case, nothing due, costs one indexed read and no write lock.
    if not due.exists():
        return 0
    created = 0
    with transaction.atomic():
        rows = due.select_related("owner").order_by("next_run_at")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        for schedule in rows[:limit]:
            created += _fire(schedule, now)
    return created


def _fire(schedule: Schedule, now: datetime) -> int:
    cap = max(settings.TASKS["SCHEDULE_MAX_CATCH_UP"], 0)
    times, total = due_times(schedule, now, keep=cap + 1)
    if not times:
        return 0
    latest = times[-1]
    fresh = now - latest <= ON_TIME_GRACE
    missed, missed_count = (times[:-1], total - 1) if fresh else (times, total)
    if schedule.catch_up == Schedule.CatchUp.ALL:
        chosen = missed[-cap:] if cap else []
    elif schedule.catch_up == Schedule.CatchUp.ONCE:
        chosen = missed[-1:]
    else:
        chosen = []
    if fresh:
        chosen.append(latest)
    skipped = missed_count - (len(chosen) - (1 if fresh else 0))
    fired = 0
    for moment in chosen:
        if schedule.overlap == Schedule.Overlap.SKIP and _previous_unfinished(schedule):
            skipped += 1
            continue
        if _submit(schedule, moment) is not None:
            fired += 1
        else:
            skipped += 1
    # An interval keeps its phase (the time after the latest due one, which
    # is past now); a cron rule's next time is simply its next after now.
    schedule.next_run_at = next_time(schedule, latest if not schedule.cron else now)
    schedule.fired_count += fired
    schedule.skipped_count += skipped
    fields = ["next_run_at", "fired_count", "skipped_count"]
    if fired:
        schedule.last_fired_at = now
        fields.append("last_fired_at")
    schedule.save(update_fields=fields)
    if fired or skipped:
        logger.info(
            "schedule %s: %s fired, %s skipped; next at %s",
            schedule.pk,
            fired,
            skipped,
            schedule.next_run_at.isoformat(),
        )
    return fired


def _previous_unfinished(schedule: Schedule) -> bool:
    """Whether the schedule's latest task is still queued or running (read
    from the end of the (schedule, scheduled_for) index)."""
    status = (
        Task.objects.filter(schedule=schedule)
        .order_by("-scheduled_for")
        .values_list("status", flat=True)
        .first()
    )
    return status in UNFINISHED


def _submit_task_of(schedule: Schedule, scheduled_for: datetime) -> services.Submitted:
    """Submit the schedule's task for one of its times, as its owner."""
    return services.submit_task(
        owner=schedule.owner,
        type_name=schedule.type,
        args=schedule.args,
        timeout=schedule.timeout,
        max_retries=schedule.max_retries,
        priority=schedule.priority,
        concurrency_key=schedule.concurrency_key,
        schedule=schedule,
        scheduled_for=scheduled_for,
    )


def _submit(schedule: Schedule, scheduled_for: datetime) -> Task | None:
    """One task for one time of the schedule; None when it cannot be
    created (the time fired already, the owner is at the cap, the type or
    its arguments are no longer valid)."""
    try:
        submitted = _submit_task_of(schedule, scheduled_for)
    except IntegrityError:
        # Fired by another cluster already: the uniqueness rule held.
        logger.info("schedule %s: %s fired elsewhere", schedule.pk, scheduled_for.isoformat())
        return None
    except services.ServiceError as exc:
        logger.warning("schedule %s: not fired at %s: %s", schedule.pk, scheduled_for, exc)
        return None
    return submitted.task


# --- What users do ----------------------------------------------------------------

EDITABLE = (
    "name",
    "type",
    "args",
    "cron",
    "interval_seconds",
    "time_zone",
    "enabled",
    "catch_up",
    "overlap",
    "timeout",
    "max_retries",
    "priority",
    "concurrency_key",
)
# Changing any of these moves next_run_at to the new rule's next time.
TIMING = frozenset({"cron", "interval_seconds", "time_zone", "enabled"})


def _validate(schedule: Schedule) -> None:
    """Check a schedule as a whole; InvalidTask with field errors (API names)."""
    errors: dict[str, Any] = {}
    if bool(schedule.cron) == bool(schedule.interval_seconds):
        errors["cron"] = ["Give either cron or interval (seconds), not both or neither."]
    zone_ok = True
    try:
        zone_of(schedule.time_zone)
    except ValueError as exc:
        errors["timezone"] = [str(exc)]
        zone_ok = False
    if schedule.cron and zone_ok:
        try:
            schedule.cron = check_cron(schedule.cron, schedule.time_zone)
        except ValueError as exc:
            errors["cron"] = [str(exc)]
    task_type = registry.get_type(schedule.type)
    if task_type is None or task_type.internal:
        errors["type"] = [f"Unknown task type {schedule.type!r}."]
    else:
        try:
            schedule.args = task_type.validate_args(schedule.args)
        except serializers.ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {"args": exc.detail}
            errors.update(detail)
        if schedule.concurrency_key and not task_type.key_concurrency:
            errors["concurrency_key"] = [f"Task type {schedule.type!r} sets no key_concurrency."]
    if errors:
        raise services.InvalidTask(errors)


def create_schedule(*, owner, **fields: Any) -> Schedule:
    """Record a schedule; its first time is the rule's next one from now."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise ValueError(f"Not schedule fields: {sorted(unknown)}")
    schedule = Schedule(owner=owner, **fields)
    _validate(schedule)
    now = timezone.now()
    schedule.created_at = schedule.updated_at = now
    schedule.next_run_at = next_time(schedule, now) if schedule.enabled else None
    schedule.save(force_insert=True)
    logger.info(
        "schedule %s created by %s: %s %s", schedule.pk, owner.pk, schedule.type, schedule.when
    )
    return schedule


def update_schedule(*, schedule: Schedule, **changes: Any) -> Schedule:
    """Edit or pause a schedule; it takes effect at once (a new rule, or
    enabling it again, counts from now: the paused time is not missed)."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"Not schedule fields: {sorted(unknown)}")
    with transaction.atomic():
        # Locked, so that a cluster firing it meanwhile cannot write its old
        # next_run_at over the new one.
        current = Schedule.objects.select_for_update().get(pk=schedule.pk)
        if changes.get("cron"):
            current.interval_seconds = None
        if changes.get("interval_seconds"):
            current.cron = ""
        for name, value in changes.items():
            setattr(current, name, value)
        _validate(current)
        now = timezone.now()
        if not current.enabled:
            current.next_run_at = None
        elif TIMING & set(changes) or current.next_run_at is None:
            current.next_run_at = next_time(current, now)
        current.updated_at = now
        current.save()
    logger.info("schedule %s updated: %s", current.pk, ", ".join(sorted(changes)) or "nothing")
    return current


def delete_schedule(*, schedule: Schedule) -> None:
    """Remove a schedule; the tasks it fired stay (their `schedule` becomes null)."""
    schedule.delete()
    logger.info("schedule %s deleted", schedule.pk)


def run_schedule(*, schedule: Schedule) -> Task:
    """Fire a schedule now, whether it is enabled or not and whatever runs."""
    with transaction.atomic():
        current = Schedule.objects.select_for_update().select_related("owner").get(pk=schedule.pk)
        now = timezone.now()
        submitted = _submit_task_of(current, now)
        current.fired_count += 1
        current.last_fired_at = now
        current.save(update_fields=["fired_count", "last_fired_at"])
    logger.info("schedule %s: run now, task %s", current.pk, submitted.task.pk)
    return submitted.task
