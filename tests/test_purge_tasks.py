from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from tasks import maintenance, services
from tasks.models import Status, Task, TaskAttempt

from . import tasks_in_states

pytestmark = pytest.mark.django_db

DAY = 86400


def purge(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("purge_tasks", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def history(owner, run_jobs):
    """Old and recent tasks in every state."""
    old_done = tasks_in_states.set_times(
        tasks_in_states.completed(owner, run_jobs), finished_ago=40 * DAY, ran_for=1
    )
    old_failed = tasks_in_states.set_times(
        tasks_in_states.failed(owner, run_jobs), finished_ago=31 * DAY, ran_for=1
    )
    old_cancelled = tasks_in_states.set_times(
        tasks_in_states.cancelled(owner), finished_ago=60 * DAY, ran_for=0
    )
    recent_done = tasks_in_states.set_times(
        tasks_in_states.completed(owner, run_jobs), finished_ago=29 * DAY, ran_for=1
    )
    # Unfinished tasks created long ago: never purged, however old.
    old_queued = tasks_in_states.queued(owner)
    old_running = tasks_in_states.in_progress(owner)
    Task.objects.filter(pk__in=[old_queued.pk, old_running.pk]).update(
        created_at=old_done.finished_at - timedelta(days=100),
        started_at=old_done.finished_at - timedelta(days=100),
    )
    return {
        "old_done": old_done,
        "old_failed": old_failed,
        "old_cancelled": old_cancelled,
        "recent_done": recent_done,
        "old_queued": old_queued,
        "old_running": old_running,
    }


def remaining() -> set[int]:
    return set(Task.objects.values_list("pk", flat=True))


def test_it_deletes_only_finished_tasks_older_than_the_cutoff(history):
    assert TaskAttempt.objects.filter(task=history["old_failed"]).exists()

    out = purge("--older-than", "30d")

    assert out == ("Deleted 3 finished task(s) (cancelled, completed, failed) older than 30d.\n")
    kept = {history[k].pk for k in ("recent_done", "old_queued", "old_running")}
    assert remaining() == kept
    # Their attempt records went with them. (Only attempts that did not
    # complete have records; the kept tasks have none.)
    assert TaskAttempt.objects.count() == 0


def test_it_works_in_batches(history):
    out = purge("--older-than", "30d", "--batch-size", "1")

    assert out.startswith("Deleted 3 finished task(s)")
    assert len(remaining()) == 3


def test_status_narrows_what_is_purged(history):
    out = purge("--older-than", "30d", "--status", "failed", "--status", "cancelled")

    assert out.startswith("Deleted 2 finished task(s) (cancelled, failed)")
    assert history["old_done"].pk in remaining()
    assert history["old_failed"].pk not in remaining()
    assert history["old_cancelled"].pk not in remaining()


def test_a_dry_run_counts_and_deletes_nothing(history):
    out = purge("--older-than", "30d", "--dry-run")

    assert out.startswith("Would delete 3 finished task(s)")
    assert len(remaining()) == 6


def test_a_shorter_age_reaches_further(history):
    purge("--older-than", "1h")

    assert remaining() == {history["old_queued"].pk, history["old_running"].pk}


@pytest.mark.parametrize("age", ["30", "d", "30x", "-5d", "0d", "1.5d", "thirty days", ""])
def test_it_rejects_a_bad_age_with_a_clear_error(history, age):
    with pytest.raises(CommandError, match="--older-than takes a positive whole number"):
        purge(f"--older-than={age}")

    assert len(remaining()) == 6


def test_it_rejects_an_unfinished_status(history):
    with pytest.raises(CommandError, match="invalid choice: 'queued'"):
        purge("--older-than", "1s", "--status", "queued")

    assert len(remaining()) == 6


def test_it_rejects_a_bad_batch_size(history):
    with pytest.raises(CommandError, match="--batch-size takes a whole number of at least 1"):
        purge("--older-than", "30d", "--batch-size", "0")

    assert len(remaining()) == 6


def test_the_service_refuses_unfinished_states(history):
    with pytest.raises(ValueError, match="Only finished tasks can be purged, not queued"):
        maintenance.purge_tasks(older_than=timedelta(seconds=1), statuses=["queued", "failed"])

    assert len(remaining()) == 6


def test_a_retried_task_is_no_longer_old_enough(history):
    services.retry_task(task=history["old_failed"])

    purge("--older-than", "30d")

    retried = Task.objects.get(pk=history["old_failed"].pk)
    assert retried.status == Status.QUEUED
    assert TaskAttempt.objects.filter(task=retried).count() == 1
