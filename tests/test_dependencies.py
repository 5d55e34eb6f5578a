"""Tasks that depend on others: waiting, release in the completing
transaction, failure propagation, outputs through the context.

Tasks are run here the way a worker runs them (claim, then run_task), in
inline mode: no lease keeper thread, and nothing runs by itself (the test's
transaction never commits)."""

import time

import pytest
from rest_framework import serializers

from tasks import queue, services, worker
from tasks.models import Status, Task
from tasks.registry import task_type, unregister

pytestmark = pytest.mark.django_db


class PartsArgs(serializers.Serializer):
    label = serializers.CharField()


@pytest.fixture
def collector():
    """A type that returns its label and its parents' outputs."""

    @task_type("test.collect", args=PartsArgs)
    def collect(ctx, label):
        return {"label": label, "seen": {str(k): v for k, v in ctx.dependency_outputs.items()}}

    yield "test.collect"
    unregister("test.collect")


def submit(owner, type_name="test.echo", **fields):
    args = fields.pop("args", {"payload": 1})
    return services.submit_task(owner=owner, type_name=type_name, args=args, **fields).task


def run_claimed(task_id):
    """Run a task the way a worker does: claim it, then run the attempt."""
    claimed = queue.claim_one(task_id=task_id, cluster="test")
    assert claimed is not None, f"task {task_id} is not runnable"
    return worker.run_task(*claimed.run_args(), claimed_by="test")


def test_a_dependant_waits_and_is_never_claimed(owner):
    parent = submit(owner)
    child = submit(owner, depends_on=[parent.pk])
    child.refresh_from_db()
    assert child.status == Status.QUEUED and child.waiting
    claimed = queue.claim(cluster="c", limit=10)
    assert [c.id for c in claimed] == [parent.pk]
    assert queue.claim_one(task_id=child.pk, cluster="c") is None


def test_completion_releases_the_dependant_in_the_same_transaction(owner):
    parent = submit(owner)
    child = submit(owner, depends_on=[parent.pk])
    assert run_claimed(parent.pk) == "completed"
    child.refresh_from_db()
    assert child.status == Status.QUEUED and not child.waiting
    assert run_claimed(child.pk) == "completed"


def test_fan_in_waits_for_every_parent_and_sees_both_outputs(owner, collector):
    left = submit(owner, collector, args={"label": "left"})
    right = submit(owner, collector, args={"label": "right"})
    join = submit(owner, collector, args={"label": "join"}, depends_on=[left.pk, right.pk])
    run_claimed(left.pk)
    join.refresh_from_db()
    assert join.waiting
    run_claimed(right.pk)
    run_claimed(join.pk)
    join.refresh_from_db()
    assert join.status == Status.COMPLETED
    assert join.output["seen"] == {
        str(left.pk): {"label": "left", "seen": {}},
        str(right.pk): {"label": "right", "seen": {}},
    }


def test_a_failed_parent_cancels_its_dependants_down_the_chain(owner):
    parent = submit(owner, "test.fail", args={"message": "broken"})
    child = submit(owner, depends_on=[parent.pk])
    grandchild = submit(owner, depends_on=[child.pk])
    assert run_claimed(parent.pk) == "failed"
    for task in (child, grandchild):
        task.refresh_from_db()
        assert task.status == Status.CANCELLED and not task.waiting
    assert child.error["type"] == "DependencyFailed"
    assert str(parent.pk) in child.error["message"] and "failed" in child.error["message"]
    assert str(child.pk) in grandchild.error["message"]


def test_a_cancelled_parent_cancels_its_dependant(owner):
    parent = submit(owner)
    child = submit(owner, depends_on=[parent.pk])
    services.cancel_task(task=parent)
    child.refresh_from_db()
    assert child.status == Status.CANCELLED
    assert "cancelled" in child.error["message"]


def test_on_dependency_failure_run_runs_anyway_with_none_for_the_failed_output(owner, collector):
    bad = submit(owner, "test.fail", args={})
    good = submit(owner, collector, args={"label": "good"})
    child = submit(
        owner,
        collector,
        args={"label": "after"},
        depends_on=[bad.pk, good.pk],
        on_dependency_failure="run",
    )
    run_claimed(bad.pk)
    child.refresh_from_db()
    assert child.waiting  # the other parent has not finished yet
    run_claimed(good.pk)
    run_claimed(child.pk)
    child.refresh_from_db()
    assert child.status == Status.COMPLETED
    assert child.output["seen"] == {str(bad.pk): None, str(good.pk): {"label": "good", "seen": {}}}


def test_a_parent_that_retries_keeps_the_dependant_waiting(owner):
    parent = submit(owner, "test.flaky", args={"fail_times": 1})
    child = submit(owner, depends_on=[parent.pk])
    assert run_claimed(parent.pk) == Status.QUEUED  # an automatic retry
    child.refresh_from_db()
    assert child.waiting and child.status == Status.QUEUED
    Task.objects.filter(pk=parent.pk).update(run_at=parent.created_at)
    assert run_claimed(parent.pk) == "completed"
    child.refresh_from_db()
    assert not child.waiting


def test_parents_already_finished_at_submit(owner):
    done = submit(owner)
    run_claimed(done.pk)
    failed = submit(owner, "test.fail", args={})
    run_claimed(failed.pk)
    runnable = submit(owner, depends_on=[done.pk])
    doomed = submit(owner, depends_on=[done.pk, failed.pk])
    runs_anyway = submit(owner, depends_on=[failed.pk], on_dependency_failure="run")
    for task in (runnable, doomed, runs_anyway):
        task.refresh_from_db()
    assert runnable.status == Status.QUEUED and not runnable.waiting
    assert doomed.status == Status.CANCELLED
    assert runs_anyway.status == Status.QUEUED and not runs_anyway.waiting


def test_a_retried_dependant_runs_without_waiting_again(owner):
    parent = submit(owner, "test.fail", args={})
    child = submit(owner, depends_on=[parent.pk])
    run_claimed(parent.pk)
    child.refresh_from_db()
    services.retry_task(task=child)
    child.refresh_from_db()
    assert child.status == Status.QUEUED and not child.waiting


# --- The API ---------------------------------------------------------------------


def test_api_depends_on_shows_waiting_for(api, owner):
    parent = submit(owner)
    response = api.post(
        "/tasks",
        {"type": "test.echo", "args": {"payload": 1}, "depends_on": [parent.pk]},
        format="json",
    )
    assert response.status_code == 202, response.content
    child_id = response.json()["task_id"]
    body = api.get(f"/tasks/{child_id}").json()
    assert body["status"] == "queued"
    assert body["depends_on"] == [parent.pk] and body["waiting_for"] == [parent.pk]
    assert body["on_dependency_failure"] == "cancel"
    listed = {t["id"]: t for t in api.get("/tasks").json()["results"]}
    assert listed[child_id]["waiting_for"] == [parent.pk]
    assert listed[parent.pk]["depends_on"] == [] and listed[parent.pk]["waiting_for"] == []
    run_claimed(parent.pk)
    assert api.get(f"/tasks/{child_id}").json()["waiting_for"] == []


@pytest.mark.parametrize(
    "depends_on",
    [[999999], "1", [True], ["$0"], [1.5], [0], [2**63], list(range(1, 102)), {"a": 1}],
)
def test_api_bad_depends_on_is_a_field_error(api, depends_on):
    response = api.post(
        "/tasks",
        {"type": "test.echo", "args": {"payload": 1}, "depends_on": depends_on},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "depends_on" in response.json()["fields"]
    assert not Task.objects.exists()


def test_api_another_users_task_is_an_unknown_id(api, outsider):
    theirs = submit(outsider)
    response = api.post(
        "/tasks",
        {"type": "test.echo", "args": {"payload": 1}, "depends_on": [theirs.pk]},
        format="json",
    )
    assert response.status_code == 400
    assert str(theirs.pk) in str(response.json()["fields"]["depends_on"])
    assert Task.objects.count() == 1


def test_api_bad_on_dependency_failure(api):
    response = api.post(
        "/tasks", {"type": "test.echo", "on_dependency_failure": "explode"}, format="json"
    )
    assert response.status_code == 400
    assert "on_dependency_failure" in response.json()["fields"]


@pytest.mark.django_db(transaction=True)
def test_a_parent_completing_while_its_dependant_is_created_never_strands_it(owner, queue_only):
    """The dependant's transaction marks and locks the parent before reading
    its state, so either it sees the parent completed, or the completion
    waits for it and then releases it: it never waits forever."""
    from tasks import lifecycle

    from .conftest import race

    for _ in range(8):
        parent = submit(owner)
        claimed = queue.claim_one(task_id=parent.pk, cluster="c")
        assert lifecycle.start_attempt(task_id=parent.pk, attempt=claimed.attempt, worker="w")
        done, child = race(
            lambda p=parent, a=claimed.attempt: lifecycle.complete_attempt(
                task_id=p.pk, attempt=a, output={"ok": True}
            ),
            lambda p=parent: submit(owner, depends_on=[p.pk]),
        )
        assert done
        child.refresh_from_db()
        assert child.status == Status.QUEUED and not child.waiting, child


@pytest.mark.django_db(transaction=True)
def test_two_parents_completing_at_once_release_their_common_dependant(owner, queue_only):
    """Each completing transaction locks the waiting child before it reads
    the parents' states: the second waits for the first to commit, then
    sees both parents completed. Without the lock each saw the other still
    running, and the fan-in task waited forever."""
    import threading

    from django.db import connections, transaction

    from tasks import lifecycle

    parents = [submit(owner), submit(owner)]
    child = submit(owner, depends_on=[p.pk for p in parents])
    attempts = {}
    for parent in parents:
        claimed = queue.claim_one(task_id=parent.pk, cluster="c")
        assert lifecycle.start_attempt(task_id=parent.pk, attempt=claimed.attempt, worker="w")
        attempts[parent.pk] = claimed.attempt
    first, second = parents
    first_done, second_started, results = threading.Event(), threading.Event(), {}

    def complete_first_and_hold():
        try:
            with transaction.atomic():
                results["first"] = lifecycle.complete_attempt(
                    task_id=first.pk, attempt=attempts[first.pk], output=1
                )
                first_done.set()
                # Keep the first completion uncommitted while the second runs.
                second_started.wait(10)
                time.sleep(0.5)
        finally:
            connections.close_all()

    def complete_second():
        try:
            first_done.wait(10)
            second_started.set()
            results["second"] = lifecycle.complete_attempt(
                task_id=second.pk, attempt=attempts[second.pk], output=2
            )
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=complete_first_and_hold),
        threading.Thread(target=complete_second),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {"first": True, "second": True}
    child.refresh_from_db()
    assert child.status == Status.QUEUED and not child.waiting, child
