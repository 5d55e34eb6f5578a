"""What a worker process runs for one claimed attempt (`worker.run_task`),
and the inline runs of the test settings (`worker.run_now`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import maintenance, queue, registry, selectors, services, worker
from tasks.models import Status, Task, TaskAttempt

from . import tasks_in_states
from .conftest import race


def submit(owner, type_name="wordcount", args=None, **options) -> Task:
    if args is None and type_name == "wordcount":
        args = {"text": "a b a"}
    return services.submit_task(owner=owner, type_name=type_name, args=args, **options).task


def run(claimed: queue.Claimed, cluster: str | None = "cluster-1", attempt=None) -> str:
    return worker.run_task(
        claimed.id,
        claimed.attempt if attempt is None else attempt,
        claimed.type,
        claimed.args,
        claimed.timeout,
        claimed.owner_id,
        claimed_by=cluster,
    )


def outcomes(task: Task) -> list[str]:
    task.refresh_from_db()
    return [a.outcome for a in selectors.attempts_of(task=task)]


# A type whose attempt is taken over while it runs, as when its worker was
# paused past its lease: the reaper requeues it, then the task carries on.
@registry.task_type("test.taken_over", description="Loses its lease half-way.")
def taken_over(ctx):
    Task.objects.filter(pk=ctx.task_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    maintenance.reap_expired_leases()
    ctx.progress(50, "still going")
    ctx.check_cancelled()
    return {"ran": "past the check"}


def test_a_claimed_attempt_runs_to_completion(owner):
    task = submit(owner)
    claimed = tasks_in_states.claim(task, "cluster-1")

    assert run(claimed) == "completed"

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output["words"] == 3
    assert task.progress == 100
    assert task.worker == worker.worker_name()
    assert task.started_at <= task.finished_at
    assert task.lease_expires_at is None
    assert outcomes(task) == [TaskAttempt.Outcome.COMPLETED]


def test_an_exception_in_the_task_fails_the_attempt_with_its_traceback(owner):
    claimed = tasks_in_states.claim(submit(owner, "test.fail", {"message": "nope"}))

    assert run(claimed) == Status.FAILED

    task = Task.objects.get(pk=claimed.id)
    assert task.status == Status.FAILED
    assert task.error["message"] == "nope"
    assert task.error["type"] == "ValueError"
    assert "Traceback (most recent call last)" in task.error["traceback"]
    assert outcomes(task) == [TaskAttempt.Outcome.FAILED]


def test_a_type_this_worker_does_not_know_fails_the_attempt(owner):
    task = Task.objects.create(owner=owner, type="gone.away", timeout=60)
    claimed = queue.claim_one(task_id=task.pk, cluster="cluster-1")

    assert run(claimed) == Status.FAILED

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.error["type"] == "UnknownTaskType"
    assert outcomes(task) == [TaskAttempt.Outcome.FAILED]


def test_a_second_delivery_of_a_finished_attempt_does_nothing(owner):
    claimed = tasks_in_states.claim(submit(owner))
    assert run(claimed) == "completed"
    before = Task.objects.filter(pk=claimed.id).values().get()

    assert run(claimed) == "skipped"

    assert Task.objects.filter(pk=claimed.id).values().get() == before
    assert outcomes(Task.objects.get(pk=claimed.id)) == ["completed"]


def test_a_delivery_of_a_running_attempt_does_nothing(owner):
    task = tasks_in_states.in_progress(owner, "first")
    claimed = queue.Claimed(task.pk, 1, task.type, task.args, task.timeout, owner.pk)

    assert run(claimed, cluster=None) == "skipped"

    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    assert task.worker == "first"
    assert outcomes(task) == ["running"]


def test_a_stale_attempt_number_does_nothing(owner):
    claimed = tasks_in_states.claim(submit(owner, "test.fail", {"message": "x"}))
    assert run(claimed) == Status.FAILED
    task = Task.objects.get(pk=claimed.id)
    services.retry_task(task=task)
    again = tasks_in_states.claim(task)
    assert again.attempt == 2

    # An old delivery (attempt 1) and one from the future (attempt 3) both lose.
    assert run(again, attempt=1) == "skipped"
    assert run(again, attempt=3) == "skipped"

    task.refresh_from_db()
    assert (task.status, task.attempts, task.started_at) == (Status.IN_PROGRESS, 2, None)
    assert run(again) == Status.FAILED
    assert outcomes(task) == ["failed", "failed"]


def test_a_delivery_for_another_clusters_claim_does_nothing(owner):
    claimed = tasks_in_states.claim(submit(owner), "cluster-2")

    assert run(claimed, cluster="cluster-1") == "skipped"

    task = Task.objects.get(pk=claimed.id)
    assert (task.status, task.started_at, task.claimed_by) == (
        Status.IN_PROGRESS,
        None,
        "cluster-2",
    )


def test_an_attempt_taken_over_while_it_runs_stops_and_writes_nothing(owner, run_jobs):
    task = run_jobs(submit, owner, "test.taken_over")

    task.refresh_from_db()
    # The reaper's requeue stands: the old attempt neither completed nor
    # overwrote it with a cancellation of its own.
    assert task.status == Status.QUEUED
    assert task.output is None
    assert task.lost_count == 1
    assert task.progress == 0
    assert outcomes(task) == [TaskAttempt.Outcome.LOST]


def test_run_now_runs_only_a_runnable_task(owner):
    later = submit(owner, delay=60)
    done = submit(owner)

    assert worker.run_now(later.pk) is None
    assert worker.run_now(done.pk) == "completed"
    assert worker.run_now(done.pk) is None

    later.refresh_from_db()
    assert (later.status, later.attempts) == (Status.QUEUED, 0)
    done.refresh_from_db()
    assert done.status == Status.COMPLETED
    assert done.claimed_by.startswith("inline:")


@pytest.mark.django_db(transaction=True)
def test_racing_deliveries_run_an_attempt_once(make_user, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    owner = make_user("racer")
    task = submit(owner)
    claimed = tasks_in_states.claim(task)
    # Run the deliveries inline: no lease keeper thread in the test process.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}

    results = race(*[lambda: run(claimed)] * 4)

    assert sorted(results) == ["completed", "skipped", "skipped", "skipped"]
    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert outcomes(task) == ["completed"]
