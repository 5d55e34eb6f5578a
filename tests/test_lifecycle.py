"""The task lifecycle at the service and API level, with jobs run inline.

Cancel, manual and automatic retry, duplicate deliveries, lease reaping,
lost messages, delayed runs, idempotency, racing requests and progress
writes. What only real processes can show (kills, timeouts) lives in
tests/e2e/test_lifecycle_e2e.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from tasks import queue, registry, selectors, services, worker
from tasks.models import Status, Task, TaskAttempt

from .conftest import client_for


def submit(owner, type_name, args=None, **options) -> Task:
    return services.submit_task(owner=owner, type_name=type_name, args=args, **options).task


def outcomes(task: Task) -> list[str]:
    task.refresh_from_db()
    return [attempt.outcome for attempt in selectors.attempts_of(task=task)]


def tasks_settings(**changes):
    return override_settings(TASKS={**settings.TASKS, **changes})


@pytest.fixture
def sent(monkeypatch):
    """Record what goes to the transport instead of running it inline."""
    messages: list[tuple[int, int]] = []
    lock = threading.Lock()

    def enqueue(*, task_id, attempt, timeout, name):
        with lock:
            messages.append((task_id, attempt))

    monkeypatch.setattr(queue, "enqueue", enqueue)
    return messages


# A type that asks for its own cancellation half-way, like a user pressing
# "cancel" while it runs; its check must then stop it.
@registry.task_type("test.cancels_itself", description="Requests its own cancel, then checks.")
def cancels_itself(ctx):
    ctx.progress(40, "about to be cancelled")
    services.cancel_task(task=Task.objects.get(pk=ctx.task_id))
    ctx.check_cancelled()
    return {"ran": "past the check"}


# --- Cancel -------------------------------------------------------------------------


def test_a_cancelled_queued_task_never_runs(api, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as messages:
        created = api.post("/tasks", {"type": "wordcount", "args": {"text": "a b"}}, format="json")
    task_id = created.json()["task_id"]

    response = api.post(f"/tasks/{task_id}/cancel")
    # The message still reaches a worker after the cancel: it must do nothing.
    for deliver in messages:
        deliver()

    assert created.status_code == 202
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    task = Task.objects.get(pk=task_id)
    assert task.status == Status.CANCELLED
    assert task.attempts == 0
    assert task.output is None
    assert task.finished_at is not None
    assert outcomes(task) == []


def test_cancelling_a_finished_task_is_a_conflict(api, owner, run_jobs):
    task = run_jobs(submit, owner, "wordcount", {"text": "done"})
    task.refresh_from_db()
    assert task.status == Status.COMPLETED

    response = api.post(f"/tasks/{task.pk}/cancel")

    assert response.status_code == 409
    assert response.json() == {
        "error": "The task is already completed and cannot be cancelled.",
        "status": "completed",
    }
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.cancel_requested is False


def test_an_outsider_cannot_cancel_or_retry(outsider_api, owner, sent):
    task = submit(owner, "test.fail", {"message": "x"})

    cancel = outsider_api.post(f"/tasks/{task.pk}/cancel")
    retry = outsider_api.post(f"/tasks/{task.pk}/retry")

    assert cancel.status_code == 404
    assert cancel.json() == {"error": "Task not found"}
    assert retry.status_code == 404
    assert retry.json() == {"error": "Task not found"}
    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.cancel_requested is False


def test_cancelling_a_running_task_stops_it_at_its_next_check(owner, run_jobs):
    task = run_jobs(submit, owner, "test.cancels_itself")

    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.cancel_requested is True
    assert task.output is None
    assert task.attempts == 1
    assert outcomes(task) == [TaskAttempt.Outcome.CANCELLED]


def test_a_cancel_request_on_a_running_task_answers_in_progress(api, owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w1")

    response = api.post(f"/tasks/{task.pk}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "in_progress"
    assert response.json()["cancel_requested"] is True
    assert services.is_cancel_requested(task_id=task.pk, attempt=1) is True
    assert services.cancelled_while_running(task_id=task.pk, attempt=1) is True
    task.refresh_from_db()
    assert task.status == Status.CANCELLED


# --- Manual retry ---------------------------------------------------------------------


def test_retrying_a_failed_task_runs_a_new_attempt(api, owner, run_jobs):
    task = run_jobs(submit, owner, "test.fail", {"message": "first"})
    task.refresh_from_db()
    assert task.status == Status.FAILED

    response = run_jobs(api.post, f"/tasks/{task.pk}/retry")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    task.refresh_from_db()
    # The retried attempt ran inline and failed the same way.
    assert task.status == Status.FAILED
    assert task.attempts == 2
    assert task.error["message"] == "first"
    assert outcomes(task) == [TaskAttempt.Outcome.FAILED, TaskAttempt.Outcome.FAILED]


def test_retrying_a_cancelled_task_runs_it(api, owner, run_jobs, sent):
    task = submit(owner, "wordcount", {"text": "one two"})
    services.cancel_task(task=task)

    response = run_jobs(api.post, f"/tasks/{task.pk}/retry")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.cancel_requested is False
    assert task.finished_at is None
    assert sent == [(task.pk, 1)]
    assert worker.run_task(task.pk, 1) == "completed"
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output["words"] == 2


def test_retrying_a_completed_task_is_a_conflict(api, owner, run_jobs):
    task = run_jobs(submit, owner, "wordcount", {"text": "done"})

    response = api.post(f"/tasks/{task.pk}/retry")

    assert response.status_code == 409
    assert response.json() == {
        "error": "Only failed or cancelled tasks can be retried; this one is completed.",
        "status": "completed",
    }
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.attempts == 1


def test_a_manual_retry_refills_the_retry_budget(owner, sent):
    task = submit(owner, "test.flaky", {"fail_times": 10}, max_retries=1)
    for attempt in (1, 2):
        Task.objects.filter(pk=task.pk).update(run_at=None, enqueued_at=timezone.now())
        assert worker.run_task(task.pk, attempt) in ("queued", "failed")
    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.retries_left == 0

    services.retry_task(task=task)

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.retries_left == 1
    assert task.lost_count == 0


# --- Automatic retry with backoff ------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    with tasks_settings(RETRY_BACKOFF_BASE=2.0, RETRY_BACKOFF_MAX=60.0):
        for n in range(1, 12):
            ceiling = min(2.0 * 2 ** (n - 1), 60.0)
            samples = [services.backoff_seconds(n) for _ in range(200)]
            assert all(ceiling / 2 <= s <= ceiling for s in samples), (n, samples[:5])
            # Jitter: retries failing together do not come back together.
            assert len({round(s, 6) for s in samples}) > 100


def test_a_failure_with_retries_left_is_queued_after_a_backoff(api, owner, run_jobs):
    before = timezone.now()
    with tasks_settings(RETRY_BACKOFF_BASE=10.0):
        task = run_jobs(submit, owner, "test.flaky", {"fail_times": 5}, max_retries=2)

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.attempts == 1
    assert task.retries_left == 1
    assert task.enqueued_at is None
    # First retry: between half and all of the base.
    assert before + timedelta(seconds=5) <= task.run_at <= timezone.now() + timedelta(seconds=10)
    assert task.error["message"] == "planned failure on attempt 1"
    [attempt] = task.attempt_log.all()
    assert attempt.outcome == TaskAttempt.Outcome.FAILED
    assert attempt.finished_at is not None
    assert attempt.error["type"] == "RuntimeError"
    # The due time is visible while the task waits for it.
    status = api.get(f"/tasks/status/{task.pk}").json()
    assert status["status"] == "queued"
    assert status["run_at"] is not None
    # Not yet due: nothing is sent.
    assert services.dispatch_due_tasks() == 0


def test_exhausted_retries_end_failed_with_the_last_error(owner, run_jobs):
    task = run_jobs(submit, owner, "test.flaky", {"fail_times": 5}, max_retries=2)
    for _ in range(2):
        Task.objects.filter(pk=task.pk).update(run_at=timezone.now() - timedelta(seconds=1))
        assert run_jobs(services.dispatch_due_tasks) == 1

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.attempts == 3
    assert task.retries_left == 0
    assert task.error["message"] == "planned failure on attempt 3"
    assert task.finished_at is not None
    assert outcomes(task) == [TaskAttempt.Outcome.FAILED] * 3
    assert services.dispatch_due_tasks() == 0


def test_a_flaky_task_completes_on_a_later_attempt(owner, run_jobs):
    task = run_jobs(submit, owner, "test.flaky", {"fail_times": 2})
    for _ in range(2):
        Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
        run_jobs(services.dispatch_due_tasks)

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output == {"attempt": 3}
    assert task.error is None
    assert outcomes(task) == ["failed", "failed", "completed"]


# --- Duplicate and stale deliveries ----------------------------------------------------


def test_a_second_delivery_of_a_finished_attempt_does_nothing(owner, run_jobs):
    task = run_jobs(submit, owner, "wordcount", {"text": "once"})
    task.refresh_from_db()
    finished = (task.status, task.finished_at, task.output)

    assert worker.run_task(task.pk, 1) == "skipped"

    task.refresh_from_db()
    assert (task.status, task.finished_at, task.output) == finished
    assert task.attempts == 1
    assert outcomes(task) == ["completed"]


def test_a_delivery_of_a_running_attempt_does_nothing(owner, sent):
    task = submit(owner, "wordcount", {"text": "busy"})
    assert services.claim_task(task_id=task.pk, attempt=1, worker="first") is not None

    assert worker.run_task(task.pk, 1) == "skipped"

    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    assert task.worker == "first"
    # The first delivery's attempt is the only one, still running.
    assert outcomes(task) == ["running"]


def test_a_stale_attempt_number_does_nothing(owner, run_jobs, sent):
    task = submit(owner, "test.fail", {"message": "x"})
    assert worker.run_task(task.pk, 1) == "failed"
    services.retry_task(task=task)

    # An old message (attempt 1) and one from the future (attempt 3) both lose.
    assert worker.run_task(task.pk, 1) == "skipped"
    assert worker.run_task(task.pk, 3) == "skipped"

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.attempts == 1
    assert worker.run_task(task.pk, 2) == "failed"
    assert outcomes(task) == ["failed", "failed"]


def test_a_superseded_attempt_cannot_write_its_result(owner, sent):
    task = submit(owner, "wordcount", {"text": "x"})
    services.claim_task(task_id=task.pk, attempt=1, worker="slow")
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.reap_expired_leases()
    services.claim_task(task_id=task.pk, attempt=2, worker="fast")

    assert services.complete_task(task_id=task.pk, attempt=1, output={"late": True}) is False
    assert services.fail_task(task_id=task.pk, attempt=1, error={"message": "late"}) is None
    assert services.renew_lease(task_id=task.pk, attempt=1) is False
    assert services.complete_task(task_id=task.pk, attempt=2, output={"ok": 1}) is True

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output == {"ok": 1}
    assert outcomes(task) == ["lost", "completed"]


# --- Lease reaping -------------------------------------------------------------------


def expire_lease(task: Task, **changes) -> None:
    Task.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1), **changes
    )


def test_an_expired_lease_sends_the_task_back_to_the_queue(owner, run_jobs, sent):
    task = submit(owner, "wordcount", {"text": "x"})
    services.claim_task(task_id=task.pk, attempt=1, worker="host:1")
    expire_lease(task)

    assert services.reap_expired_leases() == 1

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.lost_count == 1
    assert task.retries_left == task.max_retries
    assert task.enqueued_at is None
    assert task.run_at <= timezone.now()
    assert task.error["type"] == "WorkerLost"
    assert outcomes(task) == [TaskAttempt.Outcome.LOST]

    # The maintenance loop sends the next attempt, once.
    assert run_jobs(services.dispatch_due_tasks) == 1
    assert run_jobs(services.dispatch_due_tasks) == 0
    assert sent == [(task.pk, 2)]


def test_a_task_that_keeps_losing_its_worker_ends_failed(owner, sent):
    task = submit(owner, "wordcount", {"text": "x"})
    limit = settings.TASKS["MAX_LOST_REQUEUES"]
    for attempt in range(1, limit + 2):
        Task.objects.filter(pk=task.pk).update(enqueued_at=timezone.now())
        assert services.claim_task(task_id=task.pk, attempt=attempt, worker="w") is not None
        expire_lease(task)
        services.reap_expired_leases()

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.lost_count == limit
    assert task.attempts == limit + 1
    assert task.error["message"].startswith("Worker lost")
    assert task.finished_at is not None
    assert outcomes(task) == [TaskAttempt.Outcome.LOST] * (limit + 1)


def test_an_expired_lease_past_the_timeout_fails_as_timed_out(owner, sent):
    task = submit(owner, "wordcount", {"text": "x"}, timeout=5)
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    expire_lease(task, started_at=timezone.now() - timedelta(seconds=6))

    services.reap_expired_leases()

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.error["message"] == "Task timed out after 5 seconds."
    assert outcomes(task) == [TaskAttempt.Outcome.TIMED_OUT]


def test_a_timed_out_task_with_retries_left_is_queued_again(owner, sent):
    task = submit(owner, "wordcount", {"text": "x"}, timeout=5, max_retries=1)
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    expire_lease(task, started_at=timezone.now() - timedelta(seconds=6))

    services.reap_expired_leases()

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.retries_left == 0
    assert task.error["message"] == "Task timed out after 5 seconds."


def test_an_expired_lease_of_a_cancelled_task_ends_cancelled(api, owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    api.post(f"/tasks/{task.pk}/cancel")
    expire_lease(task)

    services.reap_expired_leases()

    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.lost_count == 0
    assert outcomes(task) == [TaskAttempt.Outcome.CANCELLED]


def test_a_live_lease_is_left_alone(owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    assert services.renew_lease(task_id=task.pk, attempt=1) is True

    assert services.reap_expired_leases() == 0

    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS


# --- Lost messages -----------------------------------------------------------------


def resend(run_jobs, memory) -> int:
    return run_jobs(services.resend_lost_messages, missing_since=memory)


def age(memory) -> None:
    """Pretend every task in `memory` has been missing for long enough."""
    long_ago = timezone.now() - timedelta(seconds=settings.TASKS["REQUEUE_AFTER_SECONDS"] + 1)
    for key in memory:
        memory[key] = long_ago


def test_a_queued_task_whose_message_was_lost_is_sent_again(owner, monkeypatch, run_jobs, sent):
    task = submit(owner, "wordcount", {"text": "x"})
    sent_at = task.enqueued_at
    memory = {}

    monkeypatch.setattr(queue, "queue_depth", lambda: 3)
    assert resend(run_jobs, memory) == 0  # its message still waits in the broker
    monkeypatch.setattr(queue, "queue_depth", lambda: None)
    assert resend(run_jobs, memory) == 0  # the broker cannot say
    assert memory == {}

    monkeypatch.setattr(queue, "queue_depth", lambda: 0)
    assert resend(run_jobs, memory) == 0  # missing, but maybe on its way to a worker
    assert list(memory) == [(task.pk, sent_at)]
    age(memory)
    assert resend(run_jobs, memory) == 1

    assert sent == [(task.pk, 1)]
    task.refresh_from_db()
    assert task.enqueued_at > sent_at
    assert task.status == Status.QUEUED
    # Sent once: the next pass starts counting the new message afresh.
    assert resend(run_jobs, memory) == 0
    assert list(memory) == [(task.pk, task.enqueued_at)]


def test_a_message_on_its_way_to_a_worker_is_not_sent_again(owner, monkeypatch, run_jobs, sent):
    task = submit(owner, "wordcount", {"text": "x"})
    monkeypatch.setattr(queue, "queue_depth", lambda: 0)
    memory = {}
    assert resend(run_jobs, memory) == 0
    age(memory)

    services.claim_task(task_id=task.pk, attempt=1, worker="w")

    assert resend(run_jobs, memory) == 0
    assert memory == {}
    assert sent == []


def test_a_delayed_task_has_no_message_to_lose(owner, monkeypatch, run_jobs, sent):
    delayed = submit(owner, "wordcount", {"text": "x"}, delay=3600)
    monkeypatch.setattr(queue, "queue_depth", lambda: 0)
    memory = {(delayed.pk, timezone.now() - timedelta(hours=1)): timezone.now()}
    age(memory)

    assert resend(run_jobs, memory) == 0
    assert memory == {}
    assert sent == []


def test_lost_messages_are_sent_again_behind_a_busy_queue(owner, monkeypatch, run_jobs, sent):
    lost = submit(owner, "wordcount", {"text": "lost"})
    waiting = [submit(owner, "wordcount", {"text": "waiting"}) for _ in range(2)]
    # New work keeps the broker busy: its two messages are the two newer
    # tasks', so the oldest task's message must be gone.
    monkeypatch.setattr(queue, "queue_depth", lambda: 2)
    memory = {}
    assert resend(run_jobs, memory) == 0
    assert list(memory) == [(lost.pk, lost.enqueued_at)]
    age(memory)

    assert resend(run_jobs, memory) == 1

    assert sent == [(lost.pk, 1)]
    assert Task.objects.get(pk=lost.pk).enqueued_at > lost.enqueued_at
    for task in waiting:
        assert Task.objects.get(pk=task.pk).enqueued_at == task.enqueued_at


# --- Delayed runs ----------------------------------------------------------------------


def test_a_delayed_task_waits_for_its_time_then_runs(api, owner, run_jobs):
    response = run_jobs(
        api.post, "/tasks", {"type": "wordcount", "args": {"text": "later"}, "delay": 60}, "json"
    )
    task = Task.objects.get(pk=response.json()["task_id"])

    assert response.status_code == 202
    assert response.json()["run_at"] is not None
    assert task.status == Status.QUEUED
    assert task.enqueued_at is None
    assert run_jobs(services.dispatch_due_tasks) == 0
    status = api.get(f"/tasks/status/{task.pk}").json()
    assert status["status"] == "queued"
    assert status["run_at"] == response.json()["run_at"]

    Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
    assert run_jobs(services.dispatch_due_tasks) == 1

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.attempts == 1


def test_run_at_in_the_past_runs_at_once(api, owner, run_jobs):
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    response = run_jobs(
        api.post, "/tasks", {"type": "wordcount", "args": {"text": "now"}, "run_at": past}, "json"
    )

    assert response.status_code == 202
    task = Task.objects.get(pk=response.json()["task_id"])
    assert task.status == Status.COMPLETED


def test_a_delayed_task_cancelled_before_it_is_due_never_runs(api, owner, run_jobs, sent):
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    created = api.post(
        "/tasks", {"type": "wordcount", "args": {"text": "x"}, "run_at": future}, "json"
    )
    task_id = created.json()["task_id"]

    cancel = api.post(f"/tasks/{task_id}/cancel")
    Task.objects.filter(pk=task_id).update(run_at=timezone.now() - timedelta(seconds=1))

    assert cancel.status_code == 200
    assert run_jobs(services.dispatch_due_tasks) == 0
    assert sent == []
    task = Task.objects.get(pk=task_id)
    assert task.status == Status.CANCELLED
    assert task.attempts == 0


def test_run_at_and_delay_together_are_refused(api, owner):
    body = {"type": "demo", "run_at": timezone.now().isoformat(), "delay": 5}

    response = api.post("/tasks", body, format="json")

    assert response.status_code == 400
    assert "delay" in response.json()["fields"]
    assert Task.objects.count() == 0


# --- Timeout override -----------------------------------------------------------------


def test_a_request_may_set_a_timeout_up_to_the_configured_maximum(api, owner, sent):
    limit = settings.TASKS["MAX_TIMEOUT"]

    within = api.post("/tasks", {"type": "demo", "timeout": limit}, format="json")
    beyond = api.post("/tasks", {"type": "demo", "timeout": limit + 1}, format="json")
    default = api.post("/tasks", {"type": "test.sleep", "args": {"seconds": 0}}, format="json")

    assert within.status_code == 202
    assert Task.objects.get(pk=within.json()["task_id"]).timeout == limit
    assert beyond.status_code == 400
    assert set(beyond.json()["fields"]) == {"timeout"}
    assert Task.objects.get(pk=default.json()["task_id"]).timeout == 60  # the type's default
    assert Task.objects.count() == 2


# --- Idempotency ----------------------------------------------------------------------


def post_with_key(client, key, body):
    return client.post("/tasks", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_repeated_idempotent_request_returns_the_original_task(api, owner, run_jobs, sent):
    body = {"type": "wordcount", "args": {"text": "once"}}

    first = run_jobs(post_with_key, api, "key-1", body)
    again = run_jobs(post_with_key, api, "key-1", body)

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["message"] == "Task already exists"
    assert Task.objects.count() == 1
    assert Task.objects.get().idempotency_key == "key-1"
    assert len(sent) == 1


def test_the_same_key_with_a_different_body_is_a_conflict(api, owner, sent):
    first = post_with_key(api, "key-1", {"type": "wordcount", "args": {"text": "a"}})
    other = post_with_key(api, "key-1", {"type": "wordcount", "args": {"text": "b"}})

    assert other.status_code == 409
    assert other.json() == {
        "error": "This Idempotency-Key was already used with a different request.",
        "task_id": first.json()["task_id"],
    }
    assert Task.objects.count() == 1
    assert Task.objects.get().args == {"text": "a", "top": 10}


def test_keys_of_different_users_never_collide(api, outsider_api, owner, outsider, sent):
    body = {"type": "wordcount", "args": {"text": "same"}}

    mine = post_with_key(api, "shared", body)
    theirs = post_with_key(outsider_api, "shared", body)

    assert mine.status_code == 202
    assert theirs.status_code == 202
    assert mine.json()["task_id"] != theirs.json()["task_id"]
    assert Task.objects.get(pk=theirs.json()["task_id"]).owner == outsider
    assert Task.objects.get(pk=mine.json()["task_id"]).owner == owner


def test_an_expired_key_starts_a_new_task(api, owner, sent):
    body = {"type": "wordcount", "args": {"text": "old"}}
    first = post_with_key(api, "key-1", body)
    hours = settings.TASKS["IDEMPOTENCY_HOURS"]
    Task.objects.filter(pk=first.json()["task_id"]).update(
        created_at=timezone.now() - timedelta(hours=hours, minutes=1)
    )

    second = post_with_key(api, "key-1", body)

    assert second.status_code == 202
    assert second.json()["task_id"] != first.json()["task_id"]
    assert Task.objects.get(pk=second.json()["task_id"]).idempotency_key == "key-1"
    assert Task.objects.get(pk=first.json()["task_id"]).idempotency_key is None


# --- Races (real threads, real transactions) ----------------------------------------


def race(*calls):
    """Run the calls at once from different threads; return their results."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_racing_cancels_and_retries_end_in_one_consistent_state(make_user, sent, round_):
    owner = make_user("racer")
    task = submit(owner, "test.fail", {"message": "x"})
    assert worker.run_task(task.pk, 1) == "failed"
    sent.clear()
    # One client per thread: a test client is not meant to be shared.
    clients = [client_for(owner) for _ in range(6)]

    def cancel(client):
        return lambda: ("cancel", client.post(f"/tasks/{task.pk}/cancel").status_code)

    def retry(client):
        return lambda: ("retry", client.post(f"/tasks/{task.pk}/retry").status_code)

    results = race(*[(cancel, retry)[i % 2](client) for i, client in enumerate(clients)])

    assert {code for _, code in results} <= {200, 202, 409}
    retried = sum(1 for kind, code in results if kind == "retry" and code == 202)
    cancelled = sum(1 for kind, code in results if kind == "cancel" and code == 200)
    task.refresh_from_db()
    # From `failed`, successful retries and cancels alternate, starting with
    # a retry: so the final state follows from the counts alone.
    assert retried >= 1
    assert retried - cancelled in (0, 1)
    assert task.status == (Status.QUEUED if retried > cancelled else Status.CANCELLED)
    assert len(sent) == retried
    assert set(sent) == {(task.pk, 2)}
    assert task.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_racing_retries_queue_one_new_attempt(make_user, sent):
    owner = make_user("racer")
    task = submit(owner, "test.fail", {"message": "x"})
    worker.run_task(task.pk, 1)
    sent.clear()
    clients = [client_for(owner) for _ in range(4)]

    codes = race(*[lambda c=c: c.post(f"/tasks/{task.pk}/retry").status_code for c in clients])

    assert sorted(codes) == [202, 409, 409, 409]
    assert sent == [(task.pk, 2)]
    task.refresh_from_db()
    assert task.status == Status.QUEUED


@pytest.mark.django_db(transaction=True)
def test_racing_idempotent_requests_create_one_task(make_user, sent):
    owner = make_user("racer")
    clients = [client_for(owner) for _ in range(4)]
    body = {"type": "wordcount", "args": {"text": "once"}}

    responses = race(*[lambda c=c: post_with_key(c, "same-key", body) for c in clients])

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202]
    assert len({r.json()["task_id"] for r in responses}) == 1
    assert Task.objects.filter(owner=owner).count() == 1
    assert len(sent) == 1


@pytest.mark.django_db(transaction=True)
def test_racing_deliveries_run_an_attempt_once(make_user, sent):
    owner = make_user("racer")
    task = submit(owner, "wordcount", {"text": "x"})

    results = race(*[lambda: worker.run_task(task.pk, 1)] * 4)

    assert sorted(results) == ["completed", "skipped", "skipped", "skipped"]
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert outcomes(task) == ["completed"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_a_cancel_racing_a_delivery_either_stops_it_or_asks_it_to_stop(make_user, sent, round_):
    owner = make_user("racer")
    task = submit(owner, "wordcount", {"text": "x"})
    client = client_for(owner)

    cancel, ran = race(
        lambda: client.post(f"/tasks/{task.pk}/cancel"),
        lambda: worker.run_task(task.pk, 1),
    )

    task.refresh_from_db()
    if ran == "skipped":
        # The cancel won: the task never started.
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "cancelled"
        assert (task.status, task.attempts, task.output) == (Status.CANCELLED, 0, None)
        assert outcomes(task) == []
    else:
        # The worker won: the cancel was a request it finished before
        # checking, or it came after the task had completed.
        assert ran == "completed"
        assert task.status == Status.COMPLETED
        assert cancel.status_code in (200, 409)
        assert cancel.json()["status"] in ("in_progress", "completed")
        assert outcomes(task) == ["completed"]


@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_a_finishing_worker_ends_in_one_state(make_user, sent):
    owner = make_user("racer")
    task = submit(owner, "wordcount", {"text": "x"})
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    client = client_for(owner)

    cancel, completed = race(
        lambda: client.post(f"/tasks/{task.pk}/cancel").status_code,
        lambda: services.complete_task(task_id=task.pk, attempt=1, output={"done": 1}),
    )

    task.refresh_from_db()
    assert completed is True
    assert task.status == Status.COMPLETED
    assert task.output == {"done": 1}
    # Either the cancel came first (a request the worker no longer needs)
    # or it found the task completed and said so.
    assert cancel in (200, 409)
    assert outcomes(task) == ["completed"]


# --- Progress -------------------------------------------------------------------------


def test_progress_writes_are_rate_limited(owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    with tasks_settings(PROGRESS_INTERVAL=60.0):
        ctx = worker.TaskContext(task_id=task.pk, attempt=1, owner_id=owner.pk)

    with CaptureQueriesContext(connection) as queries:
        for i in range(1000):
            ctx.progress(i / 10, f"step {i}")
            ctx.check_cancelled()
        ctx.flush_progress()

    writes = [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    reads = [q for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    # One write as the loop starts, one flush of the last value at the end.
    assert len(writes) == 2
    assert len(reads) == 1
    task.refresh_from_db()
    assert task.progress == 99
    assert task.progress_message == "step 999"


def test_progress_is_visible_while_the_task_runs(api, owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    ctx = worker.TaskContext(task_id=task.pk, attempt=1, owner_id=owner.pk)

    ctx.progress(42.7, "almost half")

    status = api.get(f"/tasks/status/{task.pk}").json()
    detail = api.get(f"/tasks/{task.pk}").json()
    assert status["progress"] == 42
    assert status["progress_message"] == "almost half"
    assert detail["progress"] == {"percent": 42, "message": "almost half"}
    task.refresh_from_db()
    assert (task.progress, task.progress_message) == (42, "almost half")


def test_progress_from_a_superseded_attempt_is_ignored(owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    expire_lease(task)
    services.reap_expired_leases()

    assert services.report_progress(task_id=task.pk, attempt=1, percent=80, message="x") is False

    task.refresh_from_db()
    assert task.progress == 0


def test_sleeping_in_a_task_does_not_spin_on_the_database(owner, sent):
    task = submit(owner, "demo")
    services.claim_task(task_id=task.pk, attempt=1, worker="w")
    # No rate limit at all: every check reads the row, so only the slicing
    # of the sleep keeps the number of reads down.
    with tasks_settings(PROGRESS_INTERVAL=0.0):
        ctx = worker.TaskContext(task_id=task.pk, attempt=1, owner_id=owner.pk)

    with CaptureQueriesContext(connection) as queries:
        ctx.sleep(0.3)

    assert len(queries.captured_queries) <= 0.3 / worker.SLEEP_SLICE + 2


def test_running_a_task_inline_starts_no_housekeeping_thread(owner, run_jobs):
    task = run_jobs(submit, owner, "wordcount", {"text": "inline"})

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert "task-maintenance" not in {thread.name for thread in threading.enumerate()}
