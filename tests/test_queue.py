"""The claim: which queued rows go to a cluster, in what order, within which limits."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks import lifecycle, queue, services
from tasks.models import Status, Task

from . import tasks_in_states
from .conftest import race


def submit(owner, type_name="test.hold", **options) -> Task:
    """A queued task: nothing runs it, as commits are not captured here."""
    return services.submit_task(owner=owner, type_name=type_name, **options).task


def claim(limit=10, cluster="cluster-1", **options) -> list[int]:
    return [c.id for c in queue.claim(cluster=cluster, limit=limit, **options)]


def claim_one_at_a_time(count: int) -> list[int]:
    """Claim `count` times with limit=1: the order rows are picked in, not
    just the order a batch is handed out in."""
    claimed = []
    for _ in range(count):
        claimed += claim(limit=1)
    return claimed


def queued_ids() -> set[int]:
    return set(Task.objects.filter(status=Status.QUEUED).values_list("pk", flat=True))


def finish(task_id: int) -> None:
    """Start and complete the claimed attempt of `task_id`, as a worker would."""
    task = Task.objects.get(pk=task_id)
    assert lifecycle.start_attempt(task_id=task_id, attempt=task.attempts, worker="w")
    assert lifecycle.complete_attempt(task_id=task_id, attempt=task.attempts, output=None)


# --- Order ---------------------------------------------------------------------------


def test_higher_priority_is_claimed_first(owner):
    low = submit(owner, priority=-5)
    normal = submit(owner)
    high = submit(owner, priority=100)

    assert claim_one_at_a_time(4) == [high.pk, normal.pk, low.pk]
    assert queued_ids() == set()


def test_equal_priorities_are_claimed_by_due_time_then_id(make_user):
    now = timezone.now()
    later = submit(make_user("a"), run_at=now - timedelta(minutes=1))
    earliest = submit(make_user("b"), run_at=now - timedelta(minutes=2))
    same_time_higher_id = submit(make_user("c"), run_at=now - timedelta(minutes=2))

    assert claim_one_at_a_time(3) == [earliest.pk, same_time_higher_id.pk, later.pk]


def test_a_batch_is_handed_out_in_claim_order(owner):
    tasks = [submit(owner, priority=p) for p in (0, 5, -5, 5)]

    claimed = queue.claim(cluster="cluster-1", limit=10)

    assert [c.id for c in claimed] == [tasks[1].pk, tasks[3].pk, tasks[0].pk, tasks[2].pk]


def test_a_task_not_yet_due_is_not_claimed(owner):
    later = submit(owner, delay=60)
    now = submit(owner)

    assert claim() == [now.pk]
    assert claim() == []
    assert queued_ids() == {later.pk}

    Task.objects.filter(pk=later.pk).update(run_at=timezone.now())
    assert claim() == [later.pk]


def test_queues_restrict_the_claim_to_those_queues(owner):
    default = submit(owner)
    report = submit(owner, "test.reports")
    assert (default.queue, report.queue) == ("default", "reports")

    assert claim(queues=["reports"]) == [report.pk]
    assert claim(queues=["reports", "other"]) == []
    assert claim(queues=["default"]) == [default.pk]


def test_no_queues_means_every_queue(owner):
    default = submit(owner)
    report = submit(owner, "test.reports")

    assert sorted(claim()) == sorted([default.pk, report.pk])


def test_a_claim_never_returns_more_than_its_limit(owner):
    tasks = [submit(owner) for _ in range(5)]

    assert claim(limit=2) == [tasks[0].pk, tasks[1].pk]
    assert claim(limit=0) == []
    assert queued_ids() == {t.pk for t in tasks[2:]}
    assert claim(limit=100) == [t.pk for t in tasks[2:]]


def test_a_claimed_row_is_in_progress_with_a_lease_and_not_started(owner, task_settings):
    task_settings(LEASE_SECONDS=30.0)
    task = submit(owner, "wordcount", args={"text": "a b"}, timeout=42)
    before = timezone.now()

    [claimed] = queue.claim(cluster="host:123:abc", limit=5)

    assert claimed == queue.Claimed(
        id=task.pk,
        attempt=1,
        type="wordcount",
        args={"text": "a b", "top": 10},
        timeout=42,
        owner_id=owner.pk,
    )
    task.refresh_from_db()
    assert task.status == Status.IN_PROGRESS
    assert task.attempts == 1
    assert task.claimed_by == "host:123:abc"
    assert task.worker == ""
    assert task.started_at is None
    assert before + timedelta(seconds=30) <= task.lease_expires_at
    assert task.lease_expires_at <= timezone.now() + timedelta(seconds=30)


def test_a_claim_counts_attempts_on_from_the_last_one(owner, run_jobs):
    task = tasks_in_states.failed(owner, run_jobs)
    services.retry_task(task=task)

    [claimed] = queue.claim(cluster="cluster-1", limit=1)

    assert (claimed.id, claimed.attempt) == (task.pk, 2)
    task.refresh_from_db()
    assert task.attempts == 2


def test_runnable_lists_due_queued_tasks_in_claim_order(owner):
    low = submit(owner, priority=-1)
    high = submit(owner, priority=1)
    submit(owner, delay=60)
    running = submit(owner)
    tasks_in_states.claim(running)

    assert list(queue.runnable().values_list("pk", flat=True)) == [high.pk, low.pk]
    assert list(queue.runnable(queues=["reports"])) == []


def test_the_written_candidates_select_what_runnable_selects(make_user):
    """The claim's SELECT written once (queue._runnable_in) picks the rows of
    `runnable(...)[:limit]`, in its order, whatever else the table holds."""
    users = [make_user(f"u{i}") for i in range(3)]
    now = timezone.now()
    for i in range(12):
        submit(users[i % 3], priority=(i % 4) * 5 - 5, run_at=now - timedelta(seconds=i % 5))
    submit(users[0], delay=600)  # not due
    submit(users[1], "test.reports")  # another queue
    parent = submit(users[2])
    submit(users[2], depends_on=[parent.pk])  # waiting
    services.cancel_task(task=submit(users[0]))
    tasks_in_states.claimed(users[1])

    for limit in (0, 1, 2, 5, 50):
        sql, params = queue._runnable_in("default", now=timezone.now(), limit=limit)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            written = [row[0] for row in cursor.fetchall()]
        orm = queue.runnable(queues=["default"])[:limit].values_list("pk", flat=True)
        assert written == list(orm)
    assert len(written) == 13


def test_the_written_running_counts_and_candidates_are_the_orms(make_user):
    """Under limits a claim reads what runs and its candidates in one
    statement (queue._running_and_runnable): the ORM's counts, and the rows
    of `runnable(...)[:limit]` in its order."""
    users = [make_user(f"r{i}") for i in range(3)]
    for i in range(5):
        task = tasks_in_states.in_progress(users[i % 2])
        Task.objects.filter(pk=task.pk).update(concurrency_key="k" if i % 3 else "")
    now = timezone.now()
    for i in range(9):
        submit(
            users[i % 3],
            "test.keyed" if i % 2 else "test.hold",
            priority=(i % 3) * 5 - 5,
            run_at=now - timedelta(seconds=i % 4),
            concurrency_key="k" if i % 2 else "",
        )
    submit(users[0], delay=600)  # not due
    submit(users[1], "test.reports")  # another queue

    for limit in (1, 4, 50):
        running, rows = queue._running_and_runnable("default", now=timezone.now(), limit=limit)
        columns = ("id", "type", "concurrency_key", "owner")
        expected = queue.runnable(queues=["default"])[:limit].values_list(*columns)
        assert rows == list(expected)
    assert len(rows) == 9

    orm = Task.objects.filter(status=Status.IN_PROGRESS)
    assert running.by_owner == Counter(orm.values_list("owner_id", flat=True))
    assert running.by_type == Counter(orm.values_list("type", flat=True))
    assert running.by_key == Counter(
        (t, k) for t, k in orm.exclude(concurrency_key="").values_list("type", "concurrency_key")
    )
    assert sum(running.by_owner.values()) == 5


def test_claim_one_takes_only_the_given_task_when_it_is_runnable(owner):
    first = submit(owner)
    second = submit(owner)
    later = submit(owner, delay=60)

    taken = queue.claim_one(task_id=second.pk, cluster="inline")

    assert taken is not None and taken.id == second.pk
    assert queue.claim_one(task_id=second.pk, cluster="inline") is None
    assert queue.claim_one(task_id=later.pk, cluster="inline") is None
    assert queued_ids() == {first.pk, later.pk}


# --- Fairness ------------------------------------------------------------------------


def test_a_user_with_one_task_does_not_wait_behind_another_users_backlog(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    backlog = [submit(alice) for _ in range(50)]
    single = submit(bob)

    claimed = claim_one_at_a_time(51)

    assert single.pk in claimed[:2]
    # Within one user, first in, first out.
    assert [pk for pk in claimed if pk != single.pk] == [t.pk for t in backlog]


def test_users_take_turns_between_backlogs(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    alices = [submit(alice) for _ in range(3)]
    bobs = [submit(bob) for _ in range(3)]

    claimed = claim_one_at_a_time(6)

    assert claimed == [alices[0].pk, bobs[0].pk, alices[1].pk, bobs[1].pk, alices[2].pk, bobs[2].pk]


def test_priority_still_comes_before_turns(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    backlog = [submit(alice) for _ in range(3)]
    urgent = submit(alice, priority=10)
    other = submit(bob)

    claimed = claim_one_at_a_time(5)

    assert claimed[0] == urgent.pk
    assert claimed[1:3] == [backlog[0].pk, other.pk]


def test_an_urgent_task_does_not_push_other_users_behind_a_backlog(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    for _ in range(50):
        submit(alice)
    submit(alice, priority=10)
    single = submit(bob)

    assert single.pk in claim_one_at_a_time(3)


# --- Limits --------------------------------------------------------------------------


def test_a_type_at_its_concurrency_is_skipped_without_blocking_others(owner):
    running = submit(owner, "test.limited")
    assert claim() == [running.pk]
    waiting = submit(owner, "test.limited")
    unlimited = submit(owner)

    assert claim(limit=1) == [unlimited.pk]
    assert claim() == []
    assert queued_ids() == {waiting.pk}

    finish(running.pk)
    assert claim() == [waiting.pk]


def test_a_claimed_but_unstarted_task_counts_against_the_limit(owner):
    first = submit(owner, "test.limited")
    tasks_in_states.claim(first, "another-cluster")
    second = submit(owner, "test.limited")

    assert claim() == []
    assert queued_ids() == {second.pk}


def test_limits_hold_within_one_batch(owner):
    limited = [submit(owner, "test.limited") for _ in range(3)]

    assert claim(limit=5) == [limited[0].pk]
    assert queued_ids() == {limited[1].pk, limited[2].pk}


def test_a_concurrency_key_limits_only_tasks_sharing_it(owner):
    first_a = submit(owner, "test.keyed", concurrency_key="a")
    assert claim() == [first_a.pk]
    second_a = submit(owner, "test.keyed", concurrency_key="a")
    b = submit(owner, "test.keyed", concurrency_key="b")
    keyless = submit(owner, "test.keyed")

    assert claim(limit=5) == [b.pk, keyless.pk]
    assert queued_ids() == {second_a.pk}

    finish(first_a.pk)
    assert claim() == [second_a.pk]


def test_a_user_at_the_running_limit_waits_while_others_run(make_user, settings):
    settings.TASKS = {**settings.TASKS, "MAX_RUNNING_PER_USER": 1}
    alice, bob = make_user("alice"), make_user("bob")
    alices = [submit(alice) for _ in range(3)]
    bobs = [submit(bob) for _ in range(2)]

    assert claim(limit=5) == [alices[0].pk, bobs[0].pk]
    assert claim(limit=5) == []

    finish(alices[0].pk)
    assert claim(limit=5) == [alices[1].pk]
    assert queued_ids() == {alices[2].pk, bobs[1].pk}


def test_no_running_limit_per_user_by_default(owner, settings):
    assert settings.TASKS["MAX_RUNNING_PER_USER"] == 0
    tasks = [submit(owner) for _ in range(4)]

    assert claim(limit=4) == [t.pk for t in tasks]


def test_limits_apply_only_to_the_queues_claimed(owner):
    running = submit(owner, "test.limited")
    assert claim() == [running.pk]
    waiting = submit(owner, "test.limited")
    report = submit(owner, "test.reports")

    assert claim(queues=["reports"]) == [report.pk]
    assert queued_ids() == {waiting.pk}


def test_an_inline_run_ignores_limits(owner):
    running = submit(owner, "test.limited")
    assert claim() == [running.pk]
    second = submit(owner, "test.limited")

    taken = queue.claim_one(task_id=second.pk, cluster="inline")

    assert taken is not None and taken.id == second.pk
    assert Task.objects.filter(type="test.limited", status=Status.IN_PROGRESS).count() == 2


# --- Clusters claiming at once (real threads, real transactions) --------------------


@pytest.mark.django_db(transaction=True)
def test_clusters_claiming_at_once_get_each_task_exactly_once(make_user, queue_only):
    owner = make_user("busy")
    tasks = [submit(owner) for _ in range(40)]

    def claim_all(cluster):
        def run():
            taken = []
            while batch := claim(limit=3, cluster=cluster):
                taken += batch
            return taken

        return run

    shares = race(*[claim_all(f"cluster-{n}") for n in range(4)])

    assert sorted(pk for share in shares for pk in share) == [t.pk for t in tasks]
    for n, share in enumerate(shares):
        assert set(
            Task.objects.filter(claimed_by=f"cluster-{n}").values_list("pk", flat=True)
        ) == set(share)
    assert Task.objects.filter(status=Status.IN_PROGRESS, attempts=1).count() == 40


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_clusters_claiming_at_once_respect_a_limit(make_user, queue_only, round_):
    owner = make_user("limited")
    for _ in range(6):
        submit(owner, "test.limited")
    unlimited = [submit(owner) for _ in range(3)]

    shares = race(*[lambda n=n: claim(limit=4, cluster=f"cluster-{n}") for n in range(5)])

    claimed = [pk for share in shares for pk in share]
    assert len(claimed) == len(set(claimed)) == 4
    running = Task.objects.filter(status=Status.IN_PROGRESS)
    assert running.filter(type="test.limited").count() == 1
    assert set(running.filter(type="test.hold").values_list("pk", flat=True)) == {
        t.pk for t in unlimited
    }
