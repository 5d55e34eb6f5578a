"""Housekeeping: the reaper of expired leases and dead workers' heartbeats.
(Purging old tasks: tests/test_purge_tasks.py.)"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tasks import lifecycle, maintenance, services, worker
from tasks.models import Status, Task, TaskAttempt, WorkerHeartbeat

from . import tasks_in_states

Outcome = TaskAttempt.Outcome


def submit(owner, **options) -> Task:
    return services.submit_task(owner=owner, type_name="test.hold", **options).task


def expire_lease(task: Task, **changes) -> None:
    Task.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), **changes
    )


def attempt_rows(task: Task) -> list[tuple[int, str]]:
    return list(
        TaskAttempt.objects.filter(task=task).order_by("number").values_list("number", "outcome")
    )


# --- Claims never started ---------------------------------------------------------------


def test_a_claim_no_worker_started_goes_back_to_the_queue_as_it_was(owner):
    task = tasks_in_states.claimed(owner, "dead-cluster")
    run_at = task.run_at
    expire_lease(task)

    assert maintenance.reap_expired_leases() == 1

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    # The attempt never ran: its number is given back, nothing is spent.
    assert task.attempts == 0
    assert (task.lost_count, task.retries_left) == (0, task.max_retries)
    assert task.run_at == run_at
    assert (task.claimed_by, task.lease_expires_at, task.error) == ("", None, None)
    assert attempt_rows(task) == []
    again = tasks_in_states.claim(task, "live-cluster")
    assert again.attempt == 1


def test_a_claim_whose_lease_still_runs_is_left_alone(owner):
    task = tasks_in_states.claimed(owner)

    assert maintenance.reap_expired_leases() == 0

    task.refresh_from_db()
    assert (task.status, task.claimed_by, task.attempts) == (Status.IN_PROGRESS, "cluster-1", 1)


# --- Started attempts whose worker went silent -------------------------------------------


def test_an_expired_lease_of_a_started_attempt_is_a_lost_worker(owner, task_settings):
    task_settings(RETRY_BACKOFF_BASE=10.0)
    task = tasks_in_states.start(submit(owner, max_retries=2), "host:1")
    expire_lease(task)
    before = timezone.now()

    assert maintenance.reap_expired_leases() == 1

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.lost_count == 1
    assert task.retries_left == 2
    assert task.attempts == 1
    # Back after a backoff, like any retry.
    assert before + timedelta(seconds=5) <= task.run_at
    assert task.error["type"] == "WorkerLost"
    assert "host:1" in task.error["message"]
    [attempt] = TaskAttempt.objects.filter(task=task)
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, Outcome.LOST, "host:1")


def test_a_task_that_keeps_losing_its_worker_ends_failed(owner, task_settings):
    task_settings(MAX_LOST_REQUEUES=3)
    task = submit(owner)
    for _ in range(4):
        tasks_in_states.start(task, "w")
        expire_lease(task)
        assert maintenance.reap_expired_leases() == 1

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.lost_count == 3
    assert task.attempts == 4
    assert task.error["message"].startswith("Worker lost")
    assert task.finished_at is not None
    assert attempt_rows(task) == [(n, Outcome.LOST) for n in (1, 2, 3, 4)]


def test_an_expired_lease_past_the_timeout_ends_timed_out(owner):
    task = tasks_in_states.start(submit(owner, timeout=5), "w")
    expire_lease(task, started_at=timezone.now() - timedelta(seconds=6))

    assert maintenance.reap_expired_leases() == 1

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.error["message"] == "Task timed out after 5 seconds."
    assert task.lost_count == 0
    assert attempt_rows(task) == [(1, Outcome.TIMED_OUT)]


def test_a_timed_out_task_with_retries_left_is_queued_again(owner):
    task = tasks_in_states.start(submit(owner, timeout=5, max_retries=1), "w")
    expire_lease(task, started_at=timezone.now() - timedelta(seconds=6))

    maintenance.reap_expired_leases()

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.retries_left == 0
    assert task.error["message"] == "Task timed out after 5 seconds."
    assert attempt_rows(task) == [(1, Outcome.TIMED_OUT)]


def test_an_expired_lease_of_a_task_asked_to_cancel_ends_cancelled(api, owner):
    task = tasks_in_states.in_progress(owner)
    api.post(f"/tasks/{task.pk}/cancel")
    expire_lease(task)

    maintenance.reap_expired_leases()

    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.lost_count == 0
    assert attempt_rows(task) == [(1, Outcome.CANCELLED)]


def test_a_live_lease_is_left_alone(owner):
    task = tasks_in_states.in_progress(owner)
    assert lifecycle.renew_lease(task_id=task.pk, attempt=1) is True

    assert maintenance.reap_expired_leases() == 0

    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    assert attempt_rows(task) == []


def test_a_lease_renewed_after_the_reaper_read_it_is_not_reaped(owner):
    task = tasks_in_states.in_progress(owner)
    expire_lease(task)
    seen_by_the_reaper = Task.objects.get(pk=task.pk).lease_expires_at
    # The worker was only slow: it renews before the reaper writes.
    assert lifecycle.renew_lease(task_id=task.pk, attempt=1)

    ended = lifecycle.end_attempt(
        task_id=task.pk,
        attempt=1,
        outcome=Outcome.LOST,
        error=lifecycle.lost_error("host:1"),
        lease_expires_at=seen_by_the_reaper,
    )

    assert ended is None
    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    assert task.lease_expires_at > timezone.now()
    assert task.lost_count == 0
    assert attempt_rows(task) == []


def test_a_claim_started_after_the_reaper_read_it_is_not_released(owner):
    task = tasks_in_states.claimed(owner)
    seen_by_the_reaper = Task.objects.get(pk=task.pk).lease_expires_at
    assert lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="w")

    released = lifecycle.release_claim(
        task_id=task.pk, attempt=1, lease_expires_at=seen_by_the_reaper
    )

    assert released is False
    task.refresh_from_db()
    assert (task.status, task.attempts, task.worker) == (Status.IN_PROGRESS, 1, "w")


def test_finished_and_queued_tasks_are_never_reaped(owner, run_jobs):
    done = tasks_in_states.completed(owner, run_jobs)
    waiting = tasks_in_states.queued(owner)
    Task.objects.filter(pk__in=[done.pk, waiting.pk]).update(
        lease_expires_at=timezone.now() - timedelta(hours=1)
    )

    assert maintenance.reap_expired_leases() == 0

    assert Task.objects.get(pk=done.pk).status == Status.COMPLETED
    assert Task.objects.get(pk=waiting.pk).status == Status.QUEUED


# --- Heartbeats ---------------------------------------------------------------------


def beat(name: str, ago: timedelta) -> None:
    worker.record_heartbeat(name=name, host="host", pid=1)
    WorkerHeartbeat.objects.filter(name=name).update(last_seen=timezone.now() - ago)


def test_workers_silent_for_over_a_day_are_forgotten(db):
    beat("dead", timedelta(days=1, minutes=1))
    beat("quiet", timedelta(hours=23))
    beat("alive", timedelta(0))

    assert maintenance.prune_dead_workers() == 1

    assert set(WorkerHeartbeat.objects.values_list("name", flat=True)) == {"quiet", "alive"}


def test_a_heartbeat_is_recorded_once_per_worker_and_refreshed(db):
    worker.record_heartbeat(name="host:1", host="host", pid=1)
    first = WorkerHeartbeat.objects.get().last_seen

    worker.record_heartbeat(name="host:1", host="host", pid=1)

    beat_row = WorkerHeartbeat.objects.get()
    assert beat_row.last_seen >= first
    assert (beat_row.host, beat_row.pid) == ("host", 1)


def test_one_pass_of_housekeeping_reaps_and_prunes(owner):
    claimed = tasks_in_states.claimed(owner)
    expire_lease(claimed)
    beat("dead", timedelta(days=2))

    assert maintenance.run_maintenance() == {"reaped": 1, "pruned_workers": 1}

    assert Task.objects.get(pk=claimed.pk).status == Status.QUEUED
    assert not WorkerHeartbeat.objects.exists()


def test_the_pruning_age_is_a_setting(db, task_settings):
    task_settings(WORKER_PRUNE_SECONDS=3600)
    beat("an hour and a minute", timedelta(hours=1, minutes=1))
    beat("59 minutes", timedelta(minutes=59))

    assert maintenance.prune_dead_workers() == 1

    assert list(WorkerHeartbeat.objects.values_list("name", flat=True)) == ["59 minutes"]
