"""The worker protocol: starting a claimed attempt, writes conditional on it
being current, and the one retry policy (`end_attempt`) for every way an
attempt ends. What only real processes can show (kills, timeouts) lives in
tests/e2e/test_lifecycle_e2e.py."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from tasks import lifecycle, maintenance, queue, selectors, services, worker
from tasks.models import Status, Task, TaskAttempt

from . import tasks_in_states

Outcome = TaskAttempt.Outcome


def submit(owner, type_name="test.hold", args=None, **options) -> Task:
    return services.submit_task(owner=owner, type_name=type_name, args=args, **options).task


def started(owner, **options) -> Task:
    """A task whose attempt 1 runs in worker "w"."""
    return tasks_in_states.start(submit(owner, **options), "w")


def snapshot(task: Task) -> dict:
    return Task.objects.filter(pk=task.pk).values().get()


def expire_lease(task: Task, **changes) -> None:
    Task.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), **changes
    )


def end(task: Task, outcome=Outcome.FAILED, attempt=None, **options) -> str | None:
    return lifecycle.end_attempt(
        task_id=task.pk,
        attempt=task.attempts if attempt is None else attempt,
        outcome=outcome,
        error={"message": f"ended {outcome}", "type": "Test", "traceback": ""},
        **options,
    )


def attempt_rows(task: Task) -> list[tuple[int, str]]:
    return list(
        TaskAttempt.objects.filter(task=task).order_by("number").values_list("number", "outcome")
    )


# --- Starting a claimed attempt -----------------------------------------------------------


def test_starting_a_claim_sets_the_worker_and_a_fresh_lease(owner, task_settings):
    task_settings(LEASE_SECONDS=60.0)
    task = tasks_in_states.claimed(owner)
    before = timezone.now()

    assert lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="host:9")

    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    assert task.worker == "host:9"
    assert before <= task.started_at <= timezone.now()
    assert task.lease_expires_at >= before + timedelta(seconds=60)
    assert task.claimed_by == "cluster-1"


def test_a_claim_is_started_only_once(owner):
    task = tasks_in_states.claimed(owner)
    assert lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="first")
    first_start = Task.objects.get(pk=task.pk).started_at

    assert not lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="second")

    task.refresh_from_db()
    assert task.worker == "first"
    assert task.started_at == first_start


def test_an_expired_claim_cannot_be_started(owner):
    task = tasks_in_states.claimed(owner)
    expire_lease(task)
    before = snapshot(task)

    assert not lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="late")

    assert snapshot(task) == before
    assert before["started_at"] is None and before["worker"] == ""


def test_a_released_claim_cannot_be_started(owner):
    task = tasks_in_states.claimed(owner)
    expire_lease(task)
    assert maintenance.reap_expired_leases() == 1

    assert not lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="late")

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert (task.attempts, task.worker, task.started_at) == (0, "", None)


def test_a_claim_taken_again_by_another_cluster_is_only_theirs_to_start(owner):
    task = tasks_in_states.claimed(owner, "paused-cluster")
    expire_lease(task)
    maintenance.reap_expired_leases()
    again = tasks_in_states.claim(task, "other-cluster")
    # The same attempt number: the first claim was given back unstarted.
    assert again.attempt == 1

    assert not lifecycle.start_attempt(
        task_id=task.pk, attempt=1, worker="w1", claimed_by="paused-cluster"
    )
    assert lifecycle.start_attempt(
        task_id=task.pk, attempt=1, worker="w2", claimed_by="other-cluster"
    )
    task.refresh_from_db()
    assert (task.claimed_by, task.worker) == ("other-cluster", "w2")


def test_a_wrong_attempt_number_cannot_be_started(owner):
    task = tasks_in_states.claimed(owner)

    assert not lifecycle.start_attempt(task_id=task.pk, attempt=2, worker="w")
    assert not lifecycle.start_attempt(task_id=task.pk, attempt=0, worker="w")

    task.refresh_from_db()
    assert task.started_at is None


# --- Writes of a superseded attempt change nothing -------------------------------------


def test_late_writes_of_a_superseded_attempt_change_nothing(owner):
    task = started(owner)
    expire_lease(task)
    assert maintenance.reap_expired_leases() == 1  # lost: back to the queue
    tasks_in_states.start(task, "fast")
    task.refresh_from_db()
    assert task.attempts == 2
    before = snapshot(task)

    assert lifecycle.renew_lease(task_id=task.pk, attempt=1) is False
    assert lifecycle.report_progress(task_id=task.pk, attempt=1, percent=80, message="x") is False
    assert lifecycle.complete_attempt(task_id=task.pk, attempt=1, output={"late": True}) is False
    assert end(task, Outcome.FAILED, attempt=1) is None
    assert end(task, Outcome.CANCELLED, attempt=1) is None
    assert lifecycle.is_cancel_requested(task_id=task.pk, attempt=1) is True

    assert snapshot(task) == before
    assert attempt_rows(task) == [(1, Outcome.LOST)]
    assert lifecycle.complete_attempt(task_id=task.pk, attempt=2, output={"ok": 1}) is True
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output == {"ok": 1}
    assert [a.outcome for a in selectors.attempts_of(task=task)] == ["lost", "completed"]


def test_a_finished_attempt_takes_no_further_writes(owner):
    task = started(owner)
    assert lifecycle.complete_attempt(task_id=task.pk, attempt=1, output={"n": 1})
    before = snapshot(task)

    assert lifecycle.complete_attempt(task_id=task.pk, attempt=1, output={"n": 2}) is False
    assert end(task, Outcome.FAILED) is None
    assert lifecycle.renew_lease(task_id=task.pk, attempt=1) is False

    assert snapshot(task) == before
    assert before["output"] == {"n": 1} and before["progress"] == 100
    assert before["lease_expires_at"] is None and before["finished_at"] is not None
    assert attempt_rows(task) == []


def test_renewing_a_current_lease_extends_it(owner, task_settings):
    task = started(owner)
    task_settings(LEASE_SECONDS=300.0)

    assert lifecycle.renew_lease(task_id=task.pk, attempt=1) is True

    task.refresh_from_db()
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=250)


def test_progress_is_stored_while_the_attempt_is_current(owner):
    task = started(owner)

    assert lifecycle.report_progress(task_id=task.pk, attempt=1, percent=30, message="m" * 300)

    task.refresh_from_db()
    assert task.progress == 30
    assert task.progress_message == "m" * 200


def test_a_cancel_request_is_seen_by_the_running_attempt(owner):
    task = started(owner)
    assert lifecycle.is_cancel_requested(task_id=task.pk, attempt=1) is False

    services.cancel_task(task=task)

    assert lifecycle.is_cancel_requested(task_id=task.pk, attempt=1) is True
    assert lifecycle.is_cancel_requested(task_id=10**12, attempt=1) is True


# --- The retry policy -------------------------------------------------------------------


def test_a_failure_with_retries_left_goes_back_to_the_queue_after_a_backoff(owner, task_settings):
    task_settings(RETRY_BACKOFF_BASE=10.0)
    task = started(owner, max_retries=2)
    before = timezone.now()

    assert end(task, Outcome.FAILED) == Status.QUEUED

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.retries_left == 1
    assert task.lost_count == 0
    assert task.attempts == 1
    # First retry: between half and all of the base.
    assert before + timedelta(seconds=5) <= task.run_at
    assert task.run_at <= timezone.now() + timedelta(seconds=10)
    assert task.error["message"] == "ended failed"
    assert (task.claimed_by, task.lease_expires_at, task.finished_at) == ("", None, None)
    [attempt] = TaskAttempt.objects.filter(task=task)
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, Outcome.FAILED, "w")
    assert attempt.error["message"] == "ended failed"
    assert attempt.started_at <= attempt.finished_at
    # Not due yet: no claim takes it.
    assert queue.claim(cluster="c", limit=5) == []


def test_a_failure_without_retries_left_ends_failed(owner):
    task = started(owner, max_retries=0)

    assert end(task, Outcome.FAILED) == Status.FAILED

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.finished_at is not None
    assert task.lease_expires_at is None
    assert task.error["message"] == "ended failed"
    assert attempt_rows(task) == [(1, Outcome.FAILED)]


def test_retries_are_spent_one_per_failure_then_the_task_fails(owner, task_settings):
    task = started(owner, max_retries=2)
    ends = []
    for attempt in (1, 2, 3):
        ends.append(end(task, Outcome.FAILED, attempt=attempt))
        if attempt < 3:
            tasks_in_states.start(task, "w")

    task.refresh_from_db()
    assert ends == [Status.QUEUED, Status.QUEUED, Status.FAILED]
    assert (task.status, task.attempts, task.retries_left) == (Status.FAILED, 3, 0)
    assert attempt_rows(task) == [(1, "failed"), (2, "failed"), (3, "failed")]


def test_a_timeout_spends_a_retry(owner):
    task = started(owner, max_retries=1)

    assert end(task, Outcome.TIMED_OUT) == Status.QUEUED

    task.refresh_from_db()
    assert task.retries_left == 0
    assert task.lost_count == 0
    assert attempt_rows(task) == [(1, Outcome.TIMED_OUT)]


def test_a_lost_worker_spends_its_own_budget_then_the_task_fails(owner, task_settings):
    task_settings(MAX_LOST_REQUEUES=2)
    task = started(owner, max_retries=1)

    ends = []
    for attempt in (1, 2, 3):
        ends.append(end(task, Outcome.LOST, attempt=attempt))
        task.refresh_from_db()
        if attempt < 3:
            assert task.run_at > timezone.now()  # a backoff, as for any retry
            tasks_in_states.start(task, "w")

    assert ends == [Status.QUEUED, Status.QUEUED, Status.FAILED]
    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.lost_count == 2
    # Lost workers never touched the task's own retries.
    assert task.retries_left == 1
    assert attempt_rows(task) == [(1, "lost"), (2, "lost"), (3, "lost")]


def test_any_end_of_an_attempt_asked_to_cancel_is_cancelled(owner):
    for outcome in (Outcome.FAILED, Outcome.TIMED_OUT, Outcome.LOST):
        task = started(owner, max_retries=3)
        services.cancel_task(task=task)

        assert end(task, outcome) == Status.CANCELLED

        task.refresh_from_db()
        assert task.status == Status.CANCELLED
        assert task.finished_at is not None
        assert (task.retries_left, task.lost_count) == (3, 0)
        assert attempt_rows(task) == [(1, Outcome.CANCELLED)]


def test_a_cancelled_outcome_ends_the_task_cancelled(owner):
    task = started(owner, max_retries=3)

    assert end(task, Outcome.CANCELLED) == Status.CANCELLED

    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert attempt_rows(task) == [(1, Outcome.CANCELLED)]


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling(task_settings):
    task_settings(RETRY_BACKOFF_BASE=2.0, RETRY_BACKOFF_MAX=60.0)
    for n in range(1, 12):
        ceiling = min(2.0 * 2 ** (n - 1), 60.0)
        samples = [lifecycle.backoff_seconds(n) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples), (n, samples[:5])
        # Jitter: retries failing together do not come back together.
        assert len({round(s, 6) for s in samples}) > 100


# --- The retry policy through a worker ------------------------------------------------


def test_a_flaky_task_completes_on_a_later_attempt(owner, run_jobs):
    task = run_jobs(submit, owner, "test.flaky", {"fail_times": 2})
    for _ in range(2):
        task.refresh_from_db()
        assert task.status == Status.QUEUED and task.run_at > timezone.now()
        Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
        worker.run_now(task.pk)

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output == {"attempt": 3}
    assert task.error is None
    assert [a.outcome for a in selectors.attempts_of(task=task)] == [
        "failed",
        "failed",
        "completed",
    ]


def test_exhausted_retries_end_failed_with_the_last_error(owner, run_jobs):
    task = run_jobs(submit, owner, "test.flaky", {"fail_times": 5}, max_retries=2)
    for _ in range(2):
        Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
        assert worker.run_now(task.pk) in (Status.QUEUED, Status.FAILED)

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.attempts == 3
    assert task.retries_left == 0
    assert task.error["message"] == "planned failure on attempt 3"
    assert task.finished_at is not None
    assert attempt_rows(task) == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert worker.run_now(task.pk) is None


# --- Database errors ----------------------------------------------------------------------


def test_a_write_is_tried_again_after_a_database_error(owner):
    task = submit(owner)
    calls = []

    def write():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        if len(calls) == 2:
            raise InterfaceError("connection already closed")
        return Task.objects.filter(pk=task.pk).update(progress_message="written")

    assert lifecycle.persistently(write, what="test write") == 1

    assert len(calls) == 3
    task.refresh_from_db()
    assert task.progress_message == "written"


def test_a_write_gives_up_after_a_leases_length(owner, task_settings):
    task_settings(LEASE_SECONDS=0.3)
    calls = []

    def down():
        calls.append(time.monotonic())
        raise OperationalError("could not connect to server")

    with pytest.raises(OperationalError):
        lifecycle.persistently(down, what="test write")

    assert len(calls) >= 2
    # Tried for about a lease, not forever (a generous deadline, not a timing).
    assert calls[-1] - calls[0] < 10


def test_other_errors_are_not_tried_again(owner):
    calls = []

    def broken():
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        lifecycle.persistently(broken, what="test write")

    assert calls == [1]


# --- Outputs ----------------------------------------------------------------------------


def test_an_output_is_measured_in_utf8_bytes(task_settings):
    task_settings(MAX_OUTPUT_BYTES=1000)
    # 600 characters, 1200 bytes: over the limit only when counted in bytes.
    wide = {"text": "é" * 600}
    narrow = {"text": "e" * 600}

    assert lifecycle.json_size(wide) == len('{"text":""}') + 1200
    assert lifecycle.limit_output(narrow) == (narrow, False)
    stored, truncated = lifecycle.limit_output(wide)

    assert truncated is True
    assert stored["truncated"] is True
    assert stored["size"] == lifecycle.json_size(wide)
    # The head never cuts a character in two, and stays within the limit.
    assert len(stored["head"].encode()) <= 1000
    assert stored["head"].startswith('{"text": "éé')
    assert "\ufffd" not in stored["head"]
