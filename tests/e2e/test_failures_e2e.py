"""What goes wrong under real clusters: a paused cluster whose tasks are
taken over, a worker process killed mid-task, and (PostgreSQL) every
database connection of the stack terminated mid-run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.backends import uses_postgres

from .harness import Stack, pid_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = {"completed", "failed", "cancelled"}


def json_value(value):
    """A JSON column as read: text from SQLite, already decoded from PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def records(stack: Stack) -> list[str]:
    path = Path(stack.env["TEST_RECORD_FILE"])
    return path.read_text().split() if path.exists() else []


def finish_all(stack: Stack, session, ids, timeout: float = 60) -> dict[int, dict]:
    def done():
        tasks = {task_id: stack.task(session, task_id) for task_id in ids}
        return tasks if all(t["status"] in TERMINAL for t in tasks.values()) else None

    return wait_for(done, timeout, interval=0.3, what=f"tasks {sorted(ids)} to finish")


def running_worker(task: dict) -> int:
    """The pid of the worker process running a started task."""
    [current] = [a for a in task["attempt_log"] if a["outcome"] == "running"]
    return pid_of(current["worker"])


def stuck_or_failed(stack: Stack) -> list[tuple]:
    return stack.db("SELECT id, status FROM tasks_task WHERE status IN ('in_progress', 'failed')")


def test_a_paused_cluster_is_taken_over_and_its_late_writes_change_nothing(stack):
    first = stack.cluster
    second = stack.start_cluster()
    second.wait_workers(2)
    # The second cluster stands by (stopped while idle), so the first one
    # claims both tasks.
    second.pause()
    alice = stack.login()
    ids = [stack.submit(alice, "test.record", {"seconds": 5}) for _ in range(2)]
    for task_id in ids:
        assert first.runs(running_worker(stack.wait_started(alice, task_id, timeout=60)))

    # The first frozen well past its lease: the second's reaper takes the
    # attempts back and its workers run them again.
    second.resume()
    first.pause()
    try:
        tasks = finish_all(stack, alice, ids, timeout=60)
    finally:
        first.resume()

    for task_id, task in tasks.items():
        assert task["status"] == "completed", task
        assert task["attempts"] == 2
        assert [a["outcome"] for a in task["attempt_log"]] == ["lost", "completed"]
        assert task["attempt_log"][0]["error"]["message"].startswith("Worker lost")
        assert task["output"] == {"task": task_id, "attempt": 2}
        assert second.runs(pid_of(task["attempt_log"][1]["worker"]))

    # Woken up, each paused attempt finds it is no longer current and stops
    # before its side effect.
    wait_for(
        lambda: all(f"task {t}: attempt 1 superseded" in first.log() for t in ids),
        30,
        what="the paused attempts to give up",
    )
    for task_id, task in tasks.items():
        assert stack.task(alice, task_id) == task
        [(status, attempts, output)] = stack.db(
            "SELECT status, attempts, output FROM tasks_task WHERE id = %s", [task_id]
        )
        assert (status, attempts) == ("completed", 2)
        assert json_value(output) == {"task": task_id, "attempt": 2}
    assert sorted(records(stack)) == sorted(f"{t}:2" for t in ids)
    assert stuck_or_failed(stack) == []

    # Both clusters serve on.
    more = [stack.submit(alice, "test.hold", {"seconds": 0.5}) for _ in range(6)]
    done = finish_all(stack, alice, more)
    assert {t["status"] for t in done.values()} == {"completed"}


def test_a_killed_worker_is_retried_and_its_cluster_keeps_all_its_workers(stack):
    cluster = stack.cluster
    alice = stack.login()
    victim = stack.submit(alice, "test.record", {"seconds": 5})
    pid = running_worker(stack.wait_started(alice, victim, timeout=60))

    cluster.kill_worker(pid)
    task = stack.wait_status(alice, victim, TERMINAL, timeout=90)

    assert task["status"] == "completed", task
    assert task["attempts"] == 2
    assert [a["outcome"] for a in task["attempt_log"]] == ["lost", "completed"]
    assert task["attempt_log"][0]["error"]["message"].startswith("Worker lost")
    assert task["output"] == {"task": victim, "attempt": 2}
    assert records(stack) == [f"{victim}:2"]
    assert cluster.runs(pid_of(task["attempt_log"][1]["worker"]))
    assert not cluster.runs(pid)

    # The killed worker never said it was done with its task, yet the
    # cluster counts it idle again, also while its other worker keeps
    # finishing short tasks: some of these still run at the same time.
    short = [stack.submit(alice, "test.hold", {"seconds": 1}) for _ in range(12)]
    tasks = finish_all(stack, alice, short, timeout=90)
    assert {t["status"] for t in tasks.values()} == {"completed"}
    runs = sorted((t["output"] for t in tasks.values()), key=lambda run: run["started"])
    overlapping = [(a, b) for a, b in itertools.pairwise(runs) if b["started"] < a["finished"]]
    assert overlapping, "the cluster ran every task on one worker"
    assert all(a["pid"] != b["pid"] for a, b in overlapping)
    assert all(cluster.runs(run["pid"]) for run in runs)


@pytest.mark.skipif(
    not uses_postgres(), reason="PostgreSQL only: SQLite has no server connections to terminate"
)
def test_tasks_survive_the_termination_of_every_database_connection(stack):
    alice = stack.login()
    # First while the cluster idles, listening for new work.
    stack.cluster.wait_workers(2)
    terminated = [stack.terminate_backends()]
    ids = [stack.submit(alice, "test.hold", {"seconds": 3}) for _ in range(4)]
    ids += [stack.submit(alice, "demo", {"seconds": 3}) for _ in range(2)]
    # Then twice mid-run, each time with both workers inside a task.
    for running in (ids[0:2], ids[2:4]):
        for task_id in running:
            stack.wait_started(alice, task_id, timeout=60)
        terminated.append(stack.terminate_backends())
    tasks = finish_all(stack, alice, ids, timeout=90)

    assert all(n >= 3 for n in terminated), terminated
    for task in tasks.values():
        assert task["status"] == "completed", task
        assert task["attempts"] == 1, task
        assert [a["outcome"] for a in task["attempt_log"]] == ["completed"], task
    for task_id in ids[4:]:
        assert tasks[task_id]["progress"]["percent"] == 100
    assert stuck_or_failed(stack) == []
    fresh = stack.submit(alice, "wordcount", {"text": "after the outage"})
    assert stack.wait_status(alice, fresh, TERMINAL, timeout=60)["status"] == "completed"
