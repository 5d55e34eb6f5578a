"""How real clusters pick tasks from the table: priority, queues, global
limits across clusters, and users taking turns.

One web server and database for the module; each test starts the clusters
it needs, and they go when it ends.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import pytest

from .conftest import failed
from .harness import Stack, pid_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = {"completed", "failed", "cancelled"}
LONG = 60  # seconds: a task that runs until the test cancels it


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("claims"))
    try:
        yield stack.start(("alice", "bob", "carol"), cluster=False)
    finally:
        stack.stop()


@pytest.fixture
def claims(shared, request):
    """The module's stack with no cluster running and no task unfinished."""
    yield shared
    for cluster in shared.clusters:
        cluster.kill()
    shared.clusters.clear()
    if failed(request):
        print(shared.all_logs(tail=8000))
    # A test that failed half-way must not leave tasks that count against the
    # next one's limits.
    shared.db(
        "UPDATE tasks_task SET status = 'cancelled', lease_expires_at = NULL "
        "WHERE status IN ('queued', 'in_progress')"
    )


def finish_all(stack: Stack, session, ids, timeout: float = 60) -> dict[int, dict]:
    def done():
        tasks = {task_id: stack.task(session, task_id) for task_id in ids}
        return tasks if all(t["status"] in TERMINAL for t in tasks.values()) else None

    return wait_for(done, timeout, interval=0.3, what=f"tasks {sorted(ids)} to finish")


def completed(tasks: dict[int, dict]) -> None:
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    for task in tasks.values():
        assert task["attempts"] == 1, task


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def interval(task: dict) -> tuple[float, float]:
    """When the task's code ran, by the worker's clock."""
    return task["output"]["started"], task["output"]["finished"]


def overlap(a: dict, b: dict) -> bool:
    (start_a, end_a), (start_b, end_b) = interval(a), interval(b)
    return start_a < end_b and start_b < end_a


def assert_one_at_a_time(tasks: list[dict]) -> None:
    """Neither the tasks' code nor their rows' running spans ever overlap."""
    by_start = sorted(tasks, key=lambda t: when(t["started_at"]))
    for earlier, later in pairwise(by_start):
        assert not overlap(earlier, later), (earlier, later)
        assert when(later["started_at"]) >= when(earlier["finished_at"]), (earlier, later)


def test_tasks_start_in_priority_order(claims):
    stack = claims
    cluster = stack.start_cluster({"Q_WORKERS": "1"})
    alice = stack.login("alice")
    blocker = stack.submit(alice, "test.hold", {"seconds": LONG})
    stack.wait_started(alice, blocker, timeout=60)

    # Submitted low, high, mid while the only worker is busy.
    ids = {p: stack.submit(alice, "test.hold", {"seconds": 0.2}, priority=p) for p in (-50, 90, 0)}
    stack.cancel(alice, blocker)
    tasks = finish_all(stack, alice, ids.values())

    completed(tasks)
    assert stack.task(alice, blocker)["status"] == "cancelled"
    order = sorted(ids, key=lambda p: when(tasks[ids[p]]["started_at"]))
    assert order == [90, 0, -50]
    rows = stack.db(
        "SELECT priority FROM tasks_task WHERE id IN (%s, %s, %s) ORDER BY started_at",
        list(ids.values()),
    )
    assert [priority for (priority,) in rows] == [90, 0, -50]
    for priority, task_id in ids.items():
        assert tasks[task_id]["priority"] == priority
        assert cluster.runs(tasks[task_id]["output"]["pid"])


def test_each_cluster_runs_only_the_queues_it_serves(claims):
    stack = claims
    reports = stack.start_cluster({"Q_QUEUES": "reports"})
    default = stack.start_cluster({"Q_QUEUES": "default"})
    reports.wait_workers(2)
    default.wait_workers(2)
    alice = stack.login("alice")

    report_ids = [stack.submit(alice, "test.reports", {"seconds": 0.2}) for _ in range(4)]
    default_ids = [stack.submit(alice, "test.hold", {"seconds": 0.2}) for _ in range(4)]
    tasks = finish_all(stack, alice, report_ids + default_ids)

    completed(tasks)
    for task_id in report_ids:
        assert tasks[task_id]["queue"] == "reports"
        assert reports.runs(tasks[task_id]["output"]["pid"]), tasks[task_id]
    for task_id in default_ids:
        assert tasks[task_id]["queue"] == "default"
        assert default.runs(tasks[task_id]["output"]["pid"]), tasks[task_id]
    ids = report_ids + default_ids
    marks = ", ".join(["%s"] * len(ids))
    claimers = stack.db(
        f"SELECT DISTINCT queue, claimed_by FROM tasks_task WHERE id IN ({marks}) ORDER BY queue",
        ids,
    )
    # One claimer per queue: each cluster's broker.
    assert [queue for queue, _ in claimers] == ["default", "reports"]
    assert claimers[0][1] != claimers[1][1]

    # Both reports workers busy with long tasks: a third report waits, and
    # the default cluster, idle, never takes it but runs its own queue's
    # tasks submitted after it.
    long_reports = [stack.submit(alice, "test.reports", {"seconds": LONG}) for _ in range(2)]
    for task_id in long_reports:
        stack.wait_started(alice, task_id, timeout=60)
    waiting_report = stack.submit(alice, "test.reports", {"seconds": 0})
    quick = [stack.submit(alice, "test.hold", {"seconds": 0}) for _ in range(3)]
    completed(finish_all(stack, alice, quick))
    [(status, attempts, claimed_by)] = stack.db(
        "SELECT status, attempts, claimed_by FROM tasks_task WHERE id = %s", [waiting_report]
    )
    assert (status, attempts, claimed_by) == ("queued", 0, "")

    # And the other way round: long default tasks leave the reports
    # cluster free for the report as soon as its own workers are.
    long_defaults = [stack.submit(alice, "test.hold", {"seconds": LONG}) for _ in range(2)]
    for task_id in long_defaults:
        stack.wait_started(alice, task_id, timeout=60)
    for task_id in long_reports:
        stack.cancel(alice, task_id)
    report = stack.wait_status(alice, waiting_report, TERMINAL, timeout=60)
    assert report["status"] == "completed"
    assert reports.runs(report["output"]["pid"])
    assert all(stack.task(alice, t)["status"] == "in_progress" for t in long_defaults)

    for task_id in long_defaults:
        stack.cancel(alice, task_id)
    ended = finish_all(stack, alice, long_reports + long_defaults)
    assert {t["status"] for t in ended.values()} == {"cancelled"}


def test_global_limits_hold_across_two_clusters(claims):
    stack = claims
    clusters = [stack.start_cluster(), stack.start_cluster()]
    for cluster in clusters:
        cluster.wait_workers(2)
    alice = stack.login("alice")

    # Four idle workers, six tasks of a type that allows one at a time.
    limited = [stack.submit(alice, "test.limited", {"seconds": 0.3}) for _ in range(6)]
    tasks = finish_all(stack, alice, limited, timeout=90)

    completed(tasks)
    assert_one_at_a_time(list(tasks.values()))

    # One key at a time, whichever cluster claims; another key runs beside it.
    k1 = [stack.submit(alice, "test.keyed", {"seconds": 1}, concurrency_key="k1") for _ in range(4)]
    stack.wait_started(alice, k1[0], timeout=60)
    k2 = [stack.submit(alice, "test.keyed", {"seconds": 1}, concurrency_key="k2") for _ in range(2)]
    tasks = finish_all(stack, alice, k1 + k2, timeout=90)

    completed(tasks)
    assert_one_at_a_time([tasks[t] for t in k1])
    assert_one_at_a_time([tasks[t] for t in k2])
    # The first k2 task did not wait behind the k1 backlog queued before it.
    assert any(overlap(tasks[k2[0]], tasks[t]) for t in k1), tasks
    assert {t["concurrency_key"] for t in tasks.values()} == {"k1", "k2"}
    workers = {pid_of(t["attempt_log"][0]["worker"]) for t in tasks.values()}
    assert all(any(c.runs(pid) for c in clusters) for pid in workers)


def test_users_take_turns(claims):
    stack = claims
    stack.start_cluster()
    alice, bob, carol = (stack.login(name) for name in ("alice", "bob", "carol"))
    # Both workers busy, so alice's backlog and bob's task are all queued
    # before anything of theirs can start.
    blockers = [stack.submit(carol, "test.hold", {"seconds": LONG}) for _ in range(2)]
    for task_id in blockers:
        stack.wait_started(carol, task_id, timeout=60)
    alices = [stack.submit(alice, "test.hold", {"seconds": 0.2}) for _ in range(40)]
    bobs = stack.submit(bob, "test.hold", {"seconds": 0.2})

    for task_id in blockers:
        stack.cancel(carol, task_id)
    tasks = finish_all(stack, alice, alices, timeout=120)
    bob_task = stack.wait_status(bob, bobs, TERMINAL, timeout=60)

    completed(tasks)
    assert bob_task["status"] == "completed"
    bob_started = when(bob_task["started_at"])
    before_bob = [t["id"] for t in tasks.values() if when(t["started_at"]) < bob_started]
    # Without turns bob would start 41st; with them he starts among the first.
    assert len(before_bob) <= 5, before_bob
