"""The worker path's hand-written statements (tasks.statements) mean what
their ORM counterparts in tasks.lifecycle mean: each case below moves
exactly the rows the ORM's conditions would, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import lifecycle, services, statements
from tasks.models import Status, Task
from webhooks.models import Delivery, Webhook

from . import tasks_in_states

pytestmark = pytest.mark.django_db


def claimed(owner, cluster="cluster-1") -> Task:
    return tasks_in_states.claimed(owner, cluster)


def start(task: Task, *, cluster: str | None = "cluster-1", attempt=None, now=None) -> bool:
    now = now or timezone.now()
    return statements.start(
        task_id=task.pk,
        attempt=task.attempts if attempt is None else attempt,
        worker="host:7",
        claimed_by=cluster,
        now=now,
        lease=now + timedelta(seconds=30),
    )


def complete(task: Task, output=None, *, attempt=None, truncated=False) -> bool:
    return statements.complete(
        task_id=task.pk,
        attempt=task.attempts if attempt is None else attempt,
        output=output,
        truncated=truncated,
        now=timezone.now(),
    )


def watch(user, active=True) -> Webhook:
    return Webhook.objects.create(
        owner=user,
        url="https://example.com/hook",
        events=["task.completed"],
        types=[],
        secret="whsec_" + "a" * 32,
        active=active,
    )


# --- start ---------------------------------------------------------------------------------


def test_start_takes_a_claim_of_its_own_cluster_and_records_the_worker(owner):
    task = claimed(owner)
    Task.objects.filter(pk=task.pk).update(error={"message": "old"})
    before = timezone.now()

    assert start(task)

    task.refresh_from_db()
    assert task.started_at >= before and task.worker == "host:7"
    assert task.lease_expires_at > task.started_at
    assert task.error is None
    assert task.status == Status.IN_PROGRESS


@pytest.mark.parametrize(
    "case",
    ["other cluster", "other attempt", "lease ran out", "started already", "cancelled"],
)
def test_start_moves_nothing_when_the_claim_is_not_ours_to_start(owner, case):
    task = claimed(owner)
    kwargs: dict = {}
    if case == "other cluster":
        kwargs["cluster"] = "cluster-2"
    elif case == "other attempt":
        kwargs["attempt"] = task.attempts + 1
    elif case == "lease ran out":
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
    elif case == "started already":
        assert start(task)
    else:
        services.cancel_task(task=task)
    before = Task.objects.filter(pk=task.pk).values().get()

    assert not start(task, **kwargs)

    assert Task.objects.filter(pk=task.pk).values().get() == before


def test_start_without_a_claimer_is_an_inline_run(owner):
    assert start(claimed(owner), cluster=None)


def test_start_leaves_an_owner_with_an_active_webhook_to_the_slow_path(owner):
    task = claimed(owner)
    watch(owner, active=False)
    other = claimed(owner)
    assert start(other)  # an inactive webhook watches nothing

    hook = Webhook.objects.create(
        owner=owner,
        url="https://example.com/started",
        events=["task.started"],
        types=[],
        secret="whsec_" + "b" * 32,
    )
    assert not start(task)
    # The ORM's path starts it and records the event.
    assert lifecycle.start_attempt(
        task_id=task.pk, attempt=task.attempts, worker="w", claimed_by="cluster-1"
    )
    assert list(Delivery.objects.filter(webhook=hook).values_list("event", "task_id")) == [
        ("task.started", task.pk)
    ]


def test_another_owners_webhook_does_not_slow_this_owner(owner, outsider):
    watch(outsider)
    assert start(claimed(owner))


# --- complete -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output", [None, 0, "text", {"words": ["één", "二"], "n": 2}, [1, 2.5, True, None]]
)
def test_complete_stores_the_output_as_the_orm_would(owner, output):
    task = tasks_in_states.in_progress(owner, "w")

    assert complete(task, output)

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output == output
    assert task.progress == 100 and task.finished_at is not None
    assert task.lease_expires_at is None and task.output_truncated is False


def test_complete_records_a_truncated_output(owner):
    task = tasks_in_states.in_progress(owner, "w")
    assert complete(task, {"truncated": True, "size": 9}, truncated=True)
    task.refresh_from_db()
    assert task.output_truncated is True


@pytest.mark.parametrize("case", ["other attempt", "finished", "queued", "has dependants"])
def test_complete_moves_nothing_outside_the_quiet_case(owner, case):
    task = tasks_in_states.in_progress(owner, "w")
    attempt = task.attempts
    if case == "other attempt":
        attempt += 1
    elif case == "finished":
        assert complete(task, "first")
    elif case == "queued":
        Task.objects.filter(pk=task.pk).update(status=Status.QUEUED)
    else:
        Task.objects.filter(pk=task.pk).update(has_dependants=True)
    before = Task.objects.filter(pk=task.pk).values().get()

    assert not complete(task, "late", attempt=attempt)

    assert Task.objects.filter(pk=task.pk).values().get() == before


def test_complete_leaves_a_watched_owner_to_the_slow_path(owner):
    task = tasks_in_states.in_progress(owner, "w")
    watch(owner)
    assert not complete(task, "x")
    assert lifecycle.complete_attempt(task_id=task.pk, attempt=task.attempts, output="x")
    task.refresh_from_db()
    assert task.status == Status.COMPLETED and task.output == "x"


def test_the_statements_run_on_djangos_cursor(owner):
    """Query capture (and every execute_wrapper) sees them like any other."""
    task = claimed(owner)
    with CaptureQueriesContext(connection) as queries:
        assert start(task)
        assert complete(task, {"ok": 1})
    assert len(queries) == 2
    assert all(q["sql"].startswith("UPDATE") for q in queries.captured_queries)
