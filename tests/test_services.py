"""What users do, through the services and the API: submit (delays, timeouts,
idempotency, unique keys, the per-user cap), cancel and retry, also when
requests race each other or a worker. Jobs run inline where commits are
captured (run_jobs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from tasks import lifecycle, queue, registry, selectors, services, worker
from tasks.models import Status, Task, TaskAttempt

from . import tasks_in_states
from .conftest import client_for, race


def submit(owner, type_name, args=None, **options) -> Task:
    return services.submit_task(owner=owner, type_name=type_name, args=args, **options).task


def outcomes(task: Task) -> list[str]:
    task.refresh_from_db()
    return [attempt.outcome for attempt in selectors.attempts_of(task=task)]


def run_claimed(claimed: queue.Claimed, cluster: str = "cluster-1") -> str:
    """Run a claimed attempt as the cluster's worker would."""
    return worker.run_task(
        claimed.id,
        claimed.attempt,
        claimed.type,
        claimed.args,
        claimed.timeout,
        claimed.owner_id,
        claimed_by=cluster,
    )


# A type that asks for its own cancellation half-way, like a user pressing
# "cancel" while it runs; its check must then stop it.
@registry.task_type("test.cancels_itself", description="Requests its own cancel, then checks.")
def cancels_itself(ctx):
    ctx.progress(40, "about to be cancelled")
    services.cancel_task(task=Task.objects.get(pk=ctx.task_id))
    ctx.check_cancelled()
    return {"ran": "past the check"}


# --- Submit ---------------------------------------------------------------------------


def test_a_submit_records_one_queued_row_due_at_once(owner):
    before = timezone.now()

    submitted = services.submit_task(
        owner=owner, type_name="test.reports", args={"seconds": 1}, priority=7
    )

    assert (submitted.created, submitted.deduplicated) == (True, False)
    task = Task.objects.get()
    assert task.pk == submitted.task.pk
    assert task.status == Status.QUEUED
    assert task.queue == "reports"
    assert task.priority == 7
    assert task.args == {"seconds": 1.0}
    assert task.attempts == 0
    assert task.claimed_by == ""
    assert task.unique_key is None and task.concurrency_key == ""
    # run_at is always set: the submit time when not delayed.
    assert before <= task.run_at <= timezone.now()
    assert task.run_at == task.created_at


def test_a_delay_sets_run_at_and_bounds_it(owner, task_settings):
    task_settings(MAX_DELAY_SECONDS=3600)
    before = timezone.now()

    task = submit(owner, "demo", delay=600)

    assert before + timedelta(seconds=600) <= task.run_at
    assert task.run_at <= timezone.now() + timedelta(seconds=600)
    with pytest.raises(services.InvalidTask) as refused:
        submit(owner, "demo", delay=3601)
    assert set(refused.value.extra["fields"]) == {"delay"}
    with pytest.raises(services.InvalidTask) as refused:
        submit(owner, "demo", run_at=timezone.now() + timedelta(seconds=3700))
    assert set(refused.value.extra["fields"]) == {"run_at"}
    assert Task.objects.count() == 1


@pytest.mark.parametrize("priority", [-101, 101])
def test_a_priority_out_of_range_is_refused(owner, priority):
    with pytest.raises(services.InvalidTask) as refused:
        submit(owner, "demo", priority=priority)

    assert refused.value.extra["fields"] == {"priority": ["Between -100 and 100."]}
    assert Task.objects.count() == 0


def test_a_concurrency_key_needs_a_type_with_key_concurrency(owner):
    with pytest.raises(services.InvalidTask) as refused:
        submit(owner, "test.hold", concurrency_key="k")

    assert set(refused.value.extra["fields"]) == {"concurrency_key"}
    assert submit(owner, "test.keyed", concurrency_key="k").concurrency_key == "k"
    assert Task.objects.count() == 1


# --- unique_key -----------------------------------------------------------------------


def test_a_second_submit_with_a_unique_key_returns_the_unfinished_task(owner):
    first = services.submit_task(owner=owner, type_name="test.hold", unique_key="nightly")

    again = services.submit_task(
        owner=owner, type_name="test.hold", args={"seconds": 5}, unique_key="nightly"
    )

    assert (first.created, first.deduplicated) == (True, False)
    assert (again.created, again.deduplicated) == (False, True)
    assert again.task.pk == first.task.pk
    assert Task.objects.get().args == {"seconds": 0.0}


def test_a_unique_key_answers_200_with_deduplicated_over_http(api, owner):
    body = {"type": "test.hold", "unique_key": "report-42"}

    first = api.post("/tasks", body, format="json")
    again = api.post("/tasks", body, format="json")

    assert first.status_code == 202
    assert "deduplicated" not in first.json()
    assert again.status_code == 200
    assert again.json()["deduplicated"] is True
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["message"] == "Task already exists"
    assert again["Location"] == f"/tasks/{first.json()['task_id']}"
    task = Task.objects.get()
    assert task.unique_key == "report-42" and task.status == Status.QUEUED
    detail = api.get(f"/tasks/{task.pk}").json()
    assert detail["unique_key"] == "report-42"


def test_a_unique_key_does_not_match_another_type(owner):
    hold = submit(owner, "test.hold", unique_key="k")
    report = services.submit_task(owner=owner, type_name="test.reports", unique_key="k")

    assert (report.created, report.deduplicated) == (True, False)
    assert report.task.pk != hold.pk
    assert Task.objects.filter(unique_key="k").count() == 2


def test_a_unique_key_does_not_match_a_finished_task(owner, run_jobs):
    done = run_jobs(submit, owner, "test.hold", unique_key="k")
    done.refresh_from_db()
    assert done.status == Status.COMPLETED

    again = services.submit_task(owner=owner, type_name="test.hold", unique_key="k")

    assert (again.created, again.deduplicated) == (True, False)
    assert again.task.pk != done.pk
    assert Task.objects.filter(unique_key="k").count() == 2


def test_a_unique_key_is_per_user(owner, outsider):
    mine = submit(owner, "test.hold", unique_key="k")

    theirs = services.submit_task(owner=outsider, type_name="test.hold", unique_key="k")

    assert (theirs.created, theirs.deduplicated) == (True, False)
    assert theirs.task.pk != mine.pk
    assert theirs.task.owner == outsider


def test_retrying_a_task_whose_unique_key_is_taken_again_is_a_conflict(owner, run_jobs):
    failed = run_jobs(submit, owner, "test.fail", unique_key="k")
    failed.refresh_from_db()
    assert failed.status == Status.FAILED
    newer = submit(owner, "test.fail", unique_key="k")

    with pytest.raises(services.TaskConflict):
        services.retry_task(task=failed)

    failed.refresh_from_db()
    assert failed.status == Status.FAILED
    assert newer.pk != failed.pk


# --- Cancel -------------------------------------------------------------------------


def test_a_cancelled_queued_task_never_runs(api, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as inline_runs:
        created = api.post("/tasks", {"type": "wordcount", "args": {"text": "a b"}}, format="json")
    task_id = created.json()["task_id"]

    response = api.post(f"/tasks/{task_id}/cancel")
    # The inline run scheduled by the submit comes after the cancel: it must do nothing.
    for run in inline_runs:
        run()

    assert created.status_code == 202
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    task = Task.objects.get(pk=task_id)
    assert task.status == Status.CANCELLED
    assert task.attempts == 0
    assert task.output is None
    assert task.finished_at is not None
    assert outcomes(task) == []


def test_a_claimed_task_no_worker_started_is_cancelled_at_once(api, owner):
    task = tasks_in_states.claimed(owner)

    response = api.post(f"/tasks/{task.pk}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.lease_expires_at is None
    # The worker the cluster handed it to finds nothing to start.
    assert not lifecycle.start_attempt(task_id=task.pk, attempt=1, worker="late")
    task.refresh_from_db()
    assert task.worker == "" and task.started_at is None
    assert outcomes(task) == []
    # That attempt never ran: its number is given back, and a retry runs attempt 1.
    assert task.attempts == 0


def test_cancelling_a_finished_task_is_a_conflict(api, owner, run_jobs):
    task = run_jobs(submit, owner, "wordcount", {"text": "done"})
    task.refresh_from_db()
    assert task.status == Status.COMPLETED

    response = api.post(f"/tasks/{task.pk}/cancel")

    assert response.status_code == 409
    assert response.json() == {
        "error": "The task is already completed and cannot be cancelled.",
        "code": "conflict",
        "status": "completed",
    }
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.cancel_requested is False


def test_an_outsider_cannot_cancel_or_retry(outsider_api, owner):
    task = submit(owner, "test.fail", {"message": "x"})

    cancel = outsider_api.post(f"/tasks/{task.pk}/cancel")
    retry = outsider_api.post(f"/tasks/{task.pk}/retry")

    assert cancel.status_code == 404
    assert cancel.json() == {"error": "Task not found", "code": "not_found"}
    assert retry.status_code == 404
    assert retry.json() == {"error": "Task not found", "code": "not_found"}
    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.cancel_requested is False


def test_cancelling_a_running_task_stops_it_at_its_next_check(owner, run_jobs):
    task = run_jobs(submit, owner, "test.cancels_itself")

    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert task.cancel_requested is True
    assert task.output is None
    assert task.progress == 40
    assert task.attempts == 1
    assert outcomes(task) == [TaskAttempt.Outcome.CANCELLED]


def test_a_cancel_request_on_a_running_task_answers_in_progress(api, owner):
    task = tasks_in_states.in_progress(owner)

    response = api.post(f"/tasks/{task.pk}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "in_progress"
    assert response.json()["cancel_requested"] is True
    assert lifecycle.is_cancel_requested(task_id=task.pk, attempt=1) is True
    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    # However the attempt then ends, it ends cancelled.
    ended = lifecycle.end_attempt(
        task_id=task.pk, attempt=1, outcome=TaskAttempt.Outcome.FAILED, error={"message": "x"}
    )
    assert ended == Status.CANCELLED
    task.refresh_from_db()
    assert task.status == Status.CANCELLED
    assert outcomes(task) == [TaskAttempt.Outcome.CANCELLED]


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


def test_retrying_a_cancelled_task_runs_it(api, owner, run_jobs):
    task = submit(owner, "wordcount", {"text": "one two"})
    services.cancel_task(task=task)

    response = run_jobs(api.post, f"/tasks/{task.pk}/retry")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["cancel_requested"] is False
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.cancel_requested is False
    assert task.attempts == 1
    assert task.output["words"] == 2


def test_a_retried_task_waits_in_the_queue_until_claimed(owner):
    task = tasks_in_states.cancelled(owner)

    services.retry_task(task=task)

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.finished_at is None
    assert task.run_at <= timezone.now()
    assert task.claimed_by == ""
    assert [c.id for c in queue.claim(cluster="c", limit=5)] == [task.pk]


def test_retrying_a_completed_task_is_a_conflict(api, owner, run_jobs):
    task = run_jobs(submit, owner, "wordcount", {"text": "done"})

    response = api.post(f"/tasks/{task.pk}/retry")

    assert response.status_code == 409
    assert response.json() == {
        "error": "Only failed or cancelled tasks can be retried; this one is completed.",
        "code": "conflict",
        "status": "completed",
    }
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.attempts == 1


def test_retrying_a_completed_task_at_the_cap_is_still_a_conflict(
    api, owner, run_jobs, task_settings
):
    task = run_jobs(submit, owner, "wordcount", {"text": "done"})
    task_settings(MAX_UNFINISHED_PER_USER=1)
    submit(owner, "test.hold", {"seconds": 1})  # queued: the owner is at the cap

    response = api.post(f"/tasks/{task.pk}/retry")

    assert response.status_code == 409
    assert response.json()["status"] == "completed"
    task.refresh_from_db()
    assert task.status == Status.COMPLETED


def test_a_manual_retry_refills_the_retry_budget(owner, run_jobs):
    task = run_jobs(submit, owner, "test.flaky", {"fail_times": 10}, max_retries=1)
    Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
    assert worker.run_now(task.pk) == Status.FAILED
    task.refresh_from_db()
    assert (task.status, task.attempts, task.retries_left) == (Status.FAILED, 2, 0)

    services.retry_task(task=task)

    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.retries_left == 1
    assert task.lost_count == 0
    assert task.error is not None  # the last error stays visible until the next attempt


# --- Delayed runs ----------------------------------------------------------------------


def test_a_delayed_task_waits_for_its_time_then_runs(api, owner, run_jobs):
    response = run_jobs(
        api.post, "/tasks", {"type": "wordcount", "args": {"text": "later"}, "delay": 60}, "json"
    )
    task = Task.objects.get(pk=response.json()["task_id"])

    assert response.status_code == 202
    assert response.json()["run_at"] is not None
    assert task.status == Status.QUEUED
    assert task.attempts == 0
    assert queue.claim(cluster="c", limit=5) == []
    status = api.get(f"/tasks/status/{task.pk}").json()
    assert status["status"] == "queued"
    assert status["run_at"] == response.json()["run_at"]

    Task.objects.filter(pk=task.pk).update(run_at=timezone.now())
    assert worker.run_now(task.pk) == Status.COMPLETED

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


def test_a_delayed_task_cancelled_before_it_is_due_never_runs(api, owner):
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    created = api.post(
        "/tasks", {"type": "wordcount", "args": {"text": "x"}, "run_at": future}, "json"
    )
    task_id = created.json()["task_id"]

    cancel = api.post(f"/tasks/{task_id}/cancel")
    Task.objects.filter(pk=task_id).update(run_at=timezone.now() - timedelta(seconds=1))

    assert cancel.status_code == 200
    assert queue.claim(cluster="c", limit=5) == []
    assert worker.run_now(task_id) is None
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


def test_a_request_may_set_a_timeout_up_to_the_configured_maximum(api, owner):
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


def test_a_repeated_idempotent_request_returns_the_original_task(api, owner, run_jobs):
    body = {"type": "wordcount", "args": {"text": "once"}}

    first = run_jobs(post_with_key, api, "key-1", body)
    again = run_jobs(post_with_key, api, "key-1", body)

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["message"] == "Task already exists"
    assert "deduplicated" not in again.json()
    task = Task.objects.get()
    assert task.idempotency_key == "key-1"
    # The repeat ran nothing: one attempt, the first request's.
    assert task.status == Status.COMPLETED
    assert outcomes(task) == [TaskAttempt.Outcome.COMPLETED]


def test_the_same_key_with_a_different_body_is_a_conflict(api, owner):
    first = post_with_key(api, "key-1", {"type": "wordcount", "args": {"text": "a"}})
    other = post_with_key(api, "key-1", {"type": "wordcount", "args": {"text": "b"}})

    assert other.status_code == 409
    assert other.json() == {
        "error": "This Idempotency-Key was already used with a different request.",
        "code": "conflict",
        "task_id": first.json()["task_id"],
    }
    assert Task.objects.count() == 1
    assert Task.objects.get().args == {"text": "a", "top": 10}


def test_keys_of_different_users_never_collide(api, outsider_api, owner, outsider):
    body = {"type": "wordcount", "args": {"text": "same"}}

    mine = post_with_key(api, "shared", body)
    theirs = post_with_key(outsider_api, "shared", body)

    assert mine.status_code == 202
    assert theirs.status_code == 202
    assert mine.json()["task_id"] != theirs.json()["task_id"]
    assert Task.objects.get(pk=theirs.json()["task_id"]).owner == outsider
    assert Task.objects.get(pk=mine.json()["task_id"]).owner == owner


def test_an_expired_key_starts_a_new_task(api, owner):
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_racing_cancels_and_retries_end_in_one_consistent_state(make_user, settings, round_):
    owner = make_user("racer")
    task = submit(owner, "test.fail", {"message": "x"})
    task.refresh_from_db()
    assert task.status == Status.FAILED  # ran inline as it committed
    # From here on retried attempts stay queued, so the counts below decide the end state.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
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
    assert task.attempts == 1
    assert outcomes(task) == [TaskAttempt.Outcome.FAILED]


@pytest.mark.django_db(transaction=True)
def test_racing_retries_queue_one_new_attempt(make_user, settings):
    owner = make_user("racer")
    task = submit(owner, "test.fail", {"message": "x"})
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    clients = [client_for(owner) for _ in range(4)]

    codes = race(*[lambda c=c: c.post(f"/tasks/{task.pk}/retry").status_code for c in clients])

    assert sorted(codes) == [202, 409, 409, 409]
    task.refresh_from_db()
    assert task.status == Status.QUEUED
    assert task.attempts == 1
    assert [c.attempt for c in queue.claim(cluster="c", limit=5)] == [2]


@pytest.mark.django_db(transaction=True)
def test_racing_idempotent_requests_create_one_task(make_user):
    owner = make_user("racer")
    clients = [client_for(owner) for _ in range(4)]
    body = {"type": "wordcount", "args": {"text": "once"}}

    responses = race(*[lambda c=c: post_with_key(c, "same-key", body) for c in clients])

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202]
    assert len({r.json()["task_id"] for r in responses}) == 1
    task = Task.objects.get(owner=owner)
    assert task.status == Status.COMPLETED
    assert outcomes(task) == [TaskAttempt.Outcome.COMPLETED]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_racing_unique_keys_create_one_task(make_user, queue_only, round_):
    owner = make_user("racer")

    results = race(
        *[
            lambda: services.submit_task(owner=owner, type_name="test.hold", unique_key="k")
            for _ in range(6)
        ]
    )

    assert sorted(r.created for r in results) == [False] * 5 + [True]
    assert sum(r.deduplicated for r in results) == 5
    assert len({r.task.pk for r in results}) == 1
    assert Task.objects.filter(owner=owner).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_a_cancel_racing_a_worker_either_stops_it_or_asks_it_to_stop(make_user, settings, round_):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    owner = make_user("racer")
    task = submit(owner, "wordcount", {"text": "x"})
    [claimed] = queue.claim(cluster="cluster-1", limit=1)
    # The worker runs inline, as the rest of the suite does (no lease keeper thread).
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    client = client_for(owner)

    cancel, ran = race(
        lambda: client.post(f"/tasks/{task.pk}/cancel"),
        lambda: run_claimed(claimed),
    )

    task.refresh_from_db()
    if ran == "skipped":
        # The cancel won: the task never started.
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "cancelled"
        assert (task.status, task.started_at, task.output) == (Status.CANCELLED, None, None)
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
def test_a_cancel_racing_a_finishing_worker_ends_in_one_state(make_user, queue_only):
    owner = make_user("racer")
    task = tasks_in_states.start(submit(owner, "wordcount", {"text": "x"}), "w")
    client = client_for(owner)

    cancel, completed = race(
        lambda: client.post(f"/tasks/{task.pk}/cancel").status_code,
        lambda: lifecycle.complete_attempt(task_id=task.pk, attempt=1, output={"done": 1}),
    )

    task.refresh_from_db()
    assert completed is True
    assert task.status == Status.COMPLETED
    assert task.output == {"done": 1}
    # Either the cancel came first (a request the worker no longer needs)
    # or it found the task completed and said so.
    assert cancel in (200, 409)
    assert outcomes(task) == ["completed"]
