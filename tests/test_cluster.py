"""The django-q2 adapter, in process: the broker that feeds a cluster from the
task table, one package per idle worker. (A real qcluster runs in
tests/e2e.)"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone
from django_q.signals import post_execute_in_worker
from django_q.signing import SignedPackage

from tasks import cluster, services, worker
from tasks.models import Status, Task, TaskAttempt

from . import tasks_in_states

WORKERS = 2


@pytest.fixture
def broker(monkeypatch, settings):
    monkeypatch.setattr("django_q.conf.Conf.WORKERS", WORKERS)
    # An idle cluster waits this long for a worker or for work.
    monkeypatch.setattr("django_q.conf.Conf.POLL", 0.01)
    broker = cluster.TaskBroker()
    yield broker
    broker._close_listener()


def submit(owner, type_name="wordcount", **options) -> Task:
    args = {"text": "a b"} if type_name == "wordcount" else None
    return services.submit_task(owner=owner, type_name=type_name, args=args, **options).task


def unpack(packages) -> list[dict]:
    return [SignedPackage.loads(payload) for _, payload in packages]


def run(package: dict) -> str:
    """What a django-q2 worker does with a package, short of saying it is
    done (attempt_done): a worker that dies here never does."""
    assert package["func"] == "tasks.worker.run_task"
    return worker.run_task(*package["args"], **package["kwargs"])


def attempt_done() -> None:
    """What a django-q2 worker signals once a task function has returned."""
    post_execute_in_worker.send(sender="django_q", func=worker.run_task, task={})


def test_a_package_names_the_entry_point_and_the_claimed_attempt(owner, broker):
    task = submit(owner, timeout=30)

    [(task_id, payload)] = broker.dequeue()

    package = SignedPackage.loads(payload)
    assert task_id == task.pk
    assert package["func"] == "tasks.worker.run_task"
    assert package["args"] == (task.pk, 1, "wordcount", {"text": "a b", "top": 10}, 30, owner.pk)
    assert package["kwargs"] == {"claimed_by": broker.name}
    assert package["timeout"] == 30
    task.refresh_from_db()
    assert (task.status, task.claimed_by, task.started_at) == (
        Status.IN_PROGRESS,
        broker.name,
        None,
    )


def test_running_a_package_completes_the_task(owner, broker):
    task = submit(owner)
    [package] = unpack(broker.dequeue())

    assert run(package) == "completed"

    task.refresh_from_db()
    assert task.status == Status.COMPLETED
    assert task.output["words"] == 2
    assert task.claimed_by == broker.name
    assert task.worker == worker.worker_name()


def test_it_claims_no_more_tasks_than_it_has_idle_workers(owner, broker):
    tasks = [submit(owner) for _ in range(5)]

    first = broker.dequeue()

    assert [task_id for task_id, _ in first] == [t.pk for t in tasks[:WORKERS]]
    assert broker.lock_size() == WORKERS
    assert broker.queue_size() == 3
    # Every worker busy: nothing is claimed until one is free again.
    assert broker.dequeue() is None
    assert Task.objects.filter(status=Status.QUEUED).count() == 3

    attempt_done()
    second = broker.dequeue()

    assert [task_id for task_id, _ in second] == [tasks[2].pk]
    assert Task.objects.filter(status=Status.QUEUED).count() == 2


def test_a_failed_package_frees_its_worker_too(owner, broker):
    for _ in range(3):
        submit(owner)
    first = broker.dequeue()
    assert len(first) == WORKERS

    broker.fail(first[0][0])

    assert len(broker.dequeue()) == 1


def test_slots_not_used_by_a_claim_stay_free(owner, broker):
    submit(owner)

    assert len(broker.dequeue()) == 1
    # One worker is still idle: the next task is handed out at once.
    submit(owner)
    assert len(broker.dequeue()) == 1
    assert broker.free.get_value() == 0


def test_with_nothing_runnable_it_returns_none_and_keeps_its_workers(owner, broker):
    later = submit(owner, delay=3600)

    assert broker.dequeue() is None

    assert broker.free.get_value() == WORKERS
    later.refresh_from_db()
    assert later.status == Status.QUEUED


def test_it_serves_only_the_configured_queues(owner, monkeypatch, settings):
    monkeypatch.setattr("django_q.conf.Conf.WORKERS", WORKERS)
    monkeypatch.setattr("django_q.conf.Conf.POLL", 0.01)
    settings.Q_QUEUES = ["reports"]
    reports_only = cluster.TaskBroker()
    try:
        default = submit(owner)
        report = submit(owner, "test.reports")

        assert [task_id for task_id, _ in reports_only.dequeue()] == [report.pk]
        assert reports_only.queue_size() == 0
    finally:
        reports_only._close_listener()
    default.refresh_from_db()
    assert default.status == Status.QUEUED


def test_nothing_can_be_enqueued_through_it(broker):
    with pytest.raises(RuntimeError, match="submit_task"):
        broker.enqueue("a package")


def test_it_answers_djangos_status_calls(broker, db):
    assert broker.ping() is True
    assert connection.vendor in broker.info()
    assert broker.queue_size() == 0
    assert broker.lock_size() == 0


# --- Workers that never acknowledge -------------------------------------------------------


def test_workers_lost_without_an_acknowledgement_are_counted_idle_again(
    owner, broker, task_settings
):
    task_settings(LEASE_SECONDS=30.0)
    for _ in range(WORKERS):
        submit(owner)
    packages = unpack(broker.dequeue())
    # The attempts end, but their worker processes die before they say so:
    # the slots stay taken.
    for package in packages:
        assert run(package) == "completed"
    assert broker.dequeue() is None
    assert broker.free.get_value() == 0

    # The first recount only notes the missing workers (an acknowledgement
    # may be on its way); the next, a lease later, gives their slots back.
    assert broker.recount_idle_workers() == 0
    assert broker.free.get_value() == 0
    assert broker.recount_idle_workers() == WORKERS

    assert broker.free.get_value() == WORKERS
    waiting = submit(owner)
    assert [task_id for task_id, _ in broker.dequeue()] == [waiting.pk]


def test_a_worker_about_to_say_it_is_done_is_not_taken_for_a_lost_one(owner, broker):
    submit(owner)
    [package] = unpack(broker.dequeue())
    assert run(package) == "completed"

    # Finished in the table, its worker not yet free: a first recount sees a gap.
    assert broker.recount_idle_workers() == 0
    attempt_done()
    # The worker closed it: the next recount gives nothing back twice.
    assert broker.recount_idle_workers() == 0
    assert broker.free.get_value() == WORKERS


def test_workers_still_running_their_tasks_are_not_counted_idle(owner, broker, task_settings):
    task_settings(LEASE_SECONDS=30.0)
    for _ in range(WORKERS):
        submit(owner)
    assert len(broker.dequeue()) == WORKERS
    submit(owner)

    assert broker.recount_idle_workers() == 0
    assert broker.recount_idle_workers() == 0

    assert broker.free.get_value() == 0
    assert Task.objects.filter(status=Status.QUEUED).count() == 1


def test_a_late_done_signal_after_a_recount_is_harmless(owner, broker):
    submit(owner)
    [(task_id, _)] = broker.dequeue()
    attempt_done()
    # django-q2's monitor acknowledges the result later: it frees nothing more.
    broker.acknowledge(task_id)

    # Every worker is already free: one more release must not add a worker.
    attempt_done()

    assert broker.free.get_value() == WORKERS


# --- Housekeeping and waiting -----------------------------------------------------------


def test_a_dequeue_first_releases_claims_of_a_dead_cluster(owner, broker):
    orphan = tasks_in_states.claimed(owner, "dead-cluster")
    Task.objects.filter(pk=orphan.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    [(task_id, payload)] = broker.dequeue()

    assert task_id == orphan.pk
    assert SignedPackage.loads(payload)["args"][1] == 1  # the released attempt number again
    orphan.refresh_from_db()
    assert (orphan.claimed_by, orphan.attempts) == (broker.name, 1)
    assert not TaskAttempt.objects.filter(task=orphan).exists()


@pytest.mark.django_db(transaction=True)
def test_an_idle_cluster_hears_of_new_work(make_user, broker, queue_only):
    owner = make_user("waker")
    if connection.vendor != "postgresql":
        # SQLite has no notifications: an idle cluster polls.
        broker._wait_for_work()
        assert broker._listener is None
        submit(owner)
        assert len(broker.dequeue()) == 1
        return
    broker._wait_for_work()  # starts listening
    assert broker._listener is not None

    report = submit(owner, "test.reports")

    heard = list(broker._listener.notifies(timeout=10, stop_after=1))
    assert [(n.channel, n.payload) for n in heard] == [("taskrunner_work", "reports")]
    assert [task_id for task_id, _ in broker.dequeue()] == [report.pk]


@pytest.mark.django_db(transaction=True)
def test_an_idle_sqlite_cluster_wakes_at_another_connections_commit(
    make_user, broker, monkeypatch, queue_only
):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL notifies idle clusters (the test above)")
    owner = make_user("committer")
    monkeypatch.setattr("django_q.conf.Conf.POLL", 0.01)
    assert broker.dequeue() is None  # nothing runnable: reads the count, waits a poll

    # Nothing committed elsewhere: it waits out the whole interval.
    started = time.monotonic()
    broker._wait_for_a_commit(0.3)
    assert time.monotonic() - started >= 0.3

    submitted = []

    def submit_elsewhere():
        time.sleep(0.2)
        try:
            submitted.append(submit(owner).pk)
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=submit_elsewhere)
    started = time.monotonic()
    thread.start()
    broker._wait_for_a_commit(60)
    thread.join()
    # Woken by the commit, far sooner than the 60 s poll interval.
    assert time.monotonic() - started < 30
    assert [task_id for task_id, _ in broker.dequeue()] == submitted


def test_a_failing_commit_watch_falls_back_to_waiting_out_the_poll(broker, monkeypatch, db):
    from django.db import DatabaseError

    def broken():
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(cluster, "_commit_count", broken)
    started = time.monotonic()
    broker._wait_for_a_commit(0.2)  # logs a warning, raises nothing
    assert time.monotonic() - started >= 0.2
