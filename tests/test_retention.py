"""Retention: per-type `retention`, TASK_RETENTION by default, purged by
housekeeping in small batches."""

from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.utils import timezone

from tasks import maintenance
from tasks.models import Status, Task, TaskAttempt
from tasks.registry import parse_retention, task_type, unregister

pytestmark = pytest.mark.django_db


@pytest.fixture
def short_lived():
    @task_type("test.short_lived", retention="1h")
    def short(ctx):
        return None

    yield "test.short_lived"
    unregister("test.short_lived")


def finished(owner, type_name, age, status=Status.COMPLETED):
    when = timezone.now() - age
    task = Task.objects.create(
        owner=owner, type=type_name, timeout=10, status=status, finished_at=when
    )
    TaskAttempt.objects.create(task=task, number=1, outcome="failed", finished_at=when)
    return task


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600), ("2w", 14 * 86400)],
)
def test_parse_retention(text, seconds):
    assert parse_retention(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30", "d", "0d", "1.5h", "-1d", "30 days", "1y"])
def test_parse_retention_refuses(text):
    with pytest.raises(ValueError):
        parse_retention(text)


def test_a_type_refuses_a_bad_retention():
    with pytest.raises(ValueError, match=r"test\.bad_retention"):
        task_type("test.bad_retention", retention="forever")


def test_a_types_retention_purges_only_its_old_finished_tasks(owner, short_lived):
    old = [finished(owner, short_lived, timedelta(hours=2), s) for s in ("completed", "failed")]
    young = finished(owner, short_lived, timedelta(minutes=30))
    queued = Task.objects.create(owner=owner, type=short_lived, timeout=10)
    other_old = finished(owner, "test.echo", timedelta(days=400))  # no default: kept
    assert maintenance.purge_expired() == 2
    left = set(Task.objects.values_list("pk", flat=True))
    assert left == {young.pk, queued.pk, other_old.pk}
    assert not TaskAttempt.objects.filter(task_id__in=[t.pk for t in old]).exists()


def test_the_default_retention_covers_types_without_their_own(owner, short_lived, task_settings):
    task_settings(RETENTION="1d")
    gone = finished(owner, "test.echo", timedelta(days=2))
    kept = finished(owner, "test.echo", timedelta(hours=20))
    own = finished(owner, short_lived, timedelta(minutes=10))  # its own 1h applies
    assert maintenance.purge_expired() == 1
    assert not Task.objects.filter(pk=gone.pk).exists()
    assert set(Task.objects.values_list("pk", flat=True)) == {kept.pk, own.pk}


def test_one_pass_purges_a_small_batch(owner, short_lived):
    for _ in range(5):
        finished(owner, short_lived, timedelta(hours=3))
    assert maintenance.purge_expired(batch_size=2) == 2
    assert maintenance.purge_expired(batch_size=2) == 2
    assert maintenance.purge_expired(batch_size=2) == 1
    assert maintenance.purge_expired(batch_size=2) == 0


def test_housekeeping_applies_retention(owner, short_lived, monkeypatch):
    finished(owner, short_lived, timedelta(hours=3))
    monkeypatch.setattr(maintenance, "_next_retention", 0.0)
    assert maintenance.run_maintenance()["purged"] == 1
    # Not again before RETENTION_EVERY has passed.
    finished(owner, short_lived, timedelta(hours=3))
    assert "purged" not in maintenance.run_maintenance()
    assert Task.objects.count() == 1


def test_a_bad_task_retention_setting_fails_the_checks(task_settings):
    task_settings(RETENTION="a month")
    errors = [e for e in run_checks() if e.id == "tasks.E001"]
    assert errors and "TASK_RETENTION" in errors[0].msg


def test_the_catalogue_shows_a_types_retention(api, short_lived):
    types = {t["name"]: t for t in api.get("/tasks/types").json()["types"]}
    assert types[short_lived]["retention"] == 3600
    assert types["wordcount"]["retention"] is None


@pytest.mark.parametrize(
    "key", ["EVENTS_POLL_SECONDS", "HEARTBEAT_SECONDS", "SCHEDULE_POLL_SECONDS", "LEASE_SECONDS"]
)
def test_an_interval_of_zero_fails_the_checks(task_settings, key):
    assert not [e for e in run_checks() if e.id in ("tasks.E002", "tasks.E003")]
    task_settings(**{key: 0})
    errors = [e for e in run_checks() if e.id == "tasks.E002"]
    assert len(errors) == 1 and f"TASK_{key}" in errors[0].msg


def test_a_lease_that_a_late_heartbeat_would_miss_fails_the_checks(task_settings):
    task_settings(HEARTBEAT_SECONDS=1.0, LEASE_SECONDS=2.0)
    errors = [e for e in run_checks() if e.id == "tasks.E003"]
    assert errors and "TASK_LEASE_SECONDS" in errors[0].msg
    task_settings(LEASE_SECONDS=2.5)
    assert not [e for e in run_checks() if e.id == "tasks.E003"]
