"""The task lifecycle on real processes: kills, timeouts, cancels, retries,
delayed runs and crashing workers."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from .harness import Stack, pid_of, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = {"completed", "failed", "cancelled"}


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def records(stack: Stack) -> list[str]:
    path = Path(stack.env["TEST_RECORD_FILE"])
    return path.read_text().split() if path.exists() else []


def statuses(stack: Stack, session, ids) -> dict[int, dict]:
    return {task_id: stack.task(session, task_id) for task_id in ids}


def wait_all_terminal(stack: Stack, session, ids, timeout: float) -> dict[int, dict]:
    def done():
        tasks = statuses(stack, session, ids)
        return tasks if all(t["status"] in TERMINAL for t in tasks.values()) else None

    return wait_for(done, timeout, interval=0.5, what=f"tasks {sorted(ids)} to finish")


def running(stack: Stack, session) -> list[dict]:
    response = session.get(f"{stack.base}/tasks?status=in_progress", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def started_count(stack: Stack, session) -> int:
    """Tasks a worker has started (not merely claimed for one)."""
    return sum(1 for task in running(stack, session) if task["started_at"])


# --- Killing the whole cluster ------------------------------------------------------


def test_killing_the_cluster_loses_and_duplicates_nothing(stack):
    session = stack.login()
    ids = [stack.submit(session, "test.record", {"seconds": 2}) for _ in range(8)]
    # Both workers busy: the kill hits tasks in the middle of their run.
    wait_for(lambda: started_count(stack, session) >= 2, 60, what="two running tasks")

    stack.kill_cluster()
    stuck = [
        t
        for t in statuses(stack, session, ids).values()
        if t["status"] == "in_progress" and t["started_at"]
    ]
    stack.start_cluster()
    tasks = wait_all_terminal(stack, session, ids, timeout=120)

    assert stuck, "the kill should have caught some tasks running"
    assert {t["status"] for t in tasks.values()} == {"completed"}, tasks
    lines = records(stack)
    # Each attempt ran its side effect at most once...
    assert [line for line, n in Counter(lines).items() if n > 1] == []
    for task_id, task in tasks.items():
        completed = [a for a in task["attempt_log"] if a["outcome"] == "completed"]
        # ... and each task completed exactly once, with the attempt it recorded.
        assert len(completed) == 1, task
        assert task["output"] == {"task": task_id, "attempt": task["attempts"]}
        assert f"{task_id}:{task['attempts']}" in lines
        assert all(a["finished_at"] for a in task["attempt_log"]), task
    # The tasks the kill interrupted were recovered from their expired lease.
    for task in stuck:
        outcomes = [a["outcome"] for a in tasks[task["id"]]["attempt_log"]]
        assert outcomes[0] == "lost", outcomes
    # The new cluster keeps serving.
    fresh = stack.submit(session, "wordcount", {"text": "after the kill"})
    assert stack.wait_status(session, fresh, TERMINAL, timeout=60)["status"] == "completed"


def test_a_claim_whose_cluster_dies_before_starting_it_comes_back_unspent(stack):
    first = stack.cluster
    # Workers that cannot start anything: the cluster claims tasks (it has
    # idle workers as far as it knows) and holds them unstarted.
    first.pause(first.wait_workers(2))
    session = stack.login()
    ids = [stack.submit(session, "test.record") for _ in range(2)]

    def claimed_unstarted():
        rows = stack.db(
            "SELECT status, attempts, claimed_by, started_at FROM tasks_task WHERE id IN (%s, %s)",
            ids,
        )
        return len(rows) == 2 and all(
            status == "in_progress" and attempts == 1 and claimed_by and started_at is None
            for status, attempts, claimed_by, started_at in rows
        )

    wait_for(claimed_unstarted, 60, what="both tasks to be claimed and not started")
    first.kill()
    second = stack.start_cluster()
    tasks = wait_all_terminal(stack, session, ids, timeout=60)

    lines = records(stack)
    for task_id, task in tasks.items():
        # Released by the reaper as if never claimed: the attempt is not spent.
        assert task["status"] == "completed", task
        assert task["attempts"] == 1
        assert [a["outcome"] for a in task["attempt_log"]] == ["completed"]
        assert task["output"] == {"task": task_id, "attempt": 1}
        assert second.runs(pid_of(task["attempt_log"][0]["worker"]))
        assert lines.count(f"{task_id}:1") == 1
    assert "released (never started)" in second.log()
    [(lost_count,)] = stack.db("SELECT SUM(lost_count) FROM tasks_task WHERE id IN (%s, %s)", ids)
    assert lost_count == 0


# --- One cluster for the rest: each test waits for its tasks to end ------------------


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("lifecycle"))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def session(shared_stack):
    return shared_stack.login()


def test_a_task_past_its_timeout_fails_and_the_pool_keeps_serving(shared_stack, session):
    stack = shared_stack
    task_id = stack.submit(session, "test.sleep", {"seconds": 4}, timeout=2)

    task = stack.wait_status(session, task_id, TERMINAL, timeout=60)
    after = stack.submit(session, "wordcount", {"text": "still serving"})

    assert task["status"] == "failed"
    assert task["error"]["message"] == "Task timed out after 2 seconds."
    assert [a["outcome"] for a in task["attempt_log"]] == ["timed_out"]
    # django-q2's clock starts as its worker takes the task, a moment before
    # the worker starts the attempt.
    ran_for = (when(task["finished_at"]) - when(task["started_at"])).total_seconds()
    assert 1.5 <= ran_for < 7, ran_for
    assert stack.wait_status(session, after, TERMINAL, timeout=60)["status"] == "completed"


def test_a_task_that_ignores_its_timeout_is_stopped_and_fails(shared_stack, session):
    stack = shared_stack
    task_id = stack.submit(session, "test.stubborn", {"seconds": 120}, timeout=2)

    task = stack.wait_status(session, task_id, TERMINAL, timeout=90)
    after = stack.submit(session, "wordcount", {"text": "still serving"})

    # django-q2 stops the worker a few seconds past the limit; its lease then
    # expires and the reaper records the timeout.
    assert task["status"] == "failed"
    assert task["error"]["message"] == "Task timed out after 2 seconds."
    assert [a["outcome"] for a in task["attempt_log"]] == ["timed_out"]
    ran_for = (when(task["finished_at"]) - when(task["started_at"])).total_seconds()
    assert 2 <= ran_for < 30, ran_for
    assert stack.wait_status(session, after, TERMINAL, timeout=60)["status"] == "completed"


def test_a_cancelled_queued_task_never_starts(shared_stack, session):
    stack = shared_stack

    def cancel(task_id):
        response = session.post(f"{stack.base}/tasks/{task_id}/cancel", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"

    delayed = stack.submit(session, "wordcount", {"text": "later"}, delay=5)
    cancel(delayed)
    # Both workers busy, so the next task waits in the queue: long enough that
    # a loaded machine still submits and cancels it before either frees up.
    busy = [stack.submit(session, "test.sleep", {"seconds": 10}) for _ in range(2)]
    wait_for(
        lambda: all(stack.task(session, t)["started_at"] for t in busy),
        60,
        what="both workers busy with these two tasks",
    )
    waiting = stack.submit(session, "wordcount", {"text": "never"})
    cancel(waiting)

    # After the workers freed up and past the delay, nothing has started.
    wait_all_terminal(stack, session, busy, timeout=60)
    follow = stack.submit(session, "wordcount", {"text": "after"})
    stack.wait_status(session, follow, "completed", timeout=60)
    run_at = when(stack.task(session, delayed)["run_at"]).timestamp()
    wait_for(lambda: time.time() > run_at + 2, 30, what="the delayed task's due time")
    for task_id in (delayed, waiting):
        task = stack.task(session, task_id)
        assert task["status"] == "cancelled"
        assert task["attempts"] == 0
        assert task["attempt_log"] == []
        assert task["started_at"] is None


def test_a_cancelled_running_task_stops_quickly(shared_stack, session):
    stack = shared_stack
    task_id = stack.submit(session, "demo", {"seconds": 60})
    stack.wait_status(session, task_id, "in_progress", timeout=60)

    response = session.post(f"{stack.base}/tasks/{task_id}/cancel", timeout=10)
    asked = time.monotonic()
    task = stack.wait_status(session, task_id, TERMINAL, timeout=30)

    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    assert task["status"] == "cancelled"
    assert time.monotonic() - asked < 5
    assert task["output"] is None
    assert [a["outcome"] for a in task["attempt_log"]] == ["cancelled"]


def test_a_flaky_task_is_retried_with_backoff_until_it_completes(shared_stack, session):
    stack = shared_stack
    task_id = stack.submit(session, "test.flaky", {"fail_times": 2})

    task = stack.wait_status(session, task_id, TERMINAL, timeout=60)

    assert task["status"] == "completed"
    assert task["output"] == {"attempt": 3}
    assert task["attempts"] == 3
    log = task["attempt_log"]
    assert [a["outcome"] for a in log] == ["failed", "failed", "completed"]
    assert log[0]["error"]["message"] == "planned failure on attempt 1"
    # Each retry waited its backoff (at least half of BASE * 2**(n-1)).
    for n, (previous, current) in enumerate(pairwise(log), start=1):
        gap = (when(current["started_at"]) - when(previous["finished_at"])).total_seconds()
        assert gap >= 0.5 * 2 ** (n - 1) / 2, (n, gap)


def test_a_delayed_task_waits_then_runs(shared_stack, session):
    stack = shared_stack
    task_id = stack.submit(session, "wordcount", {"text": "later"}, delay=2)

    queued = stack.task(session, task_id)
    status = session.get(f"{stack.base}/tasks/status/{task_id}", timeout=10).json()
    task = stack.wait_status(session, task_id, TERMINAL, timeout=60)

    assert queued["status"] == "queued"
    assert queued["run_at"] is not None
    assert status["run_at"] == queued["run_at"]
    assert task["status"] == "completed"
    started = when(task["started_at"])
    assert started >= when(queued["run_at"])
    assert (started - when(queued["run_at"])).total_seconds() < 10


def test_a_task_that_kills_its_worker_ends_failed_and_the_pool_keeps_serving(shared_stack, session):
    stack = shared_stack
    task_id = stack.submit(session, "test.crash")

    task = stack.wait_status(session, task_id, TERMINAL, timeout=120)
    after = stack.submit(session, "wordcount", {"text": "still serving"})

    assert task["status"] == "failed"
    assert task["error"]["message"].startswith("Worker lost")
    # The first run and each of the MAX_LOST_REQUEUES (3) requeues.
    assert [a["outcome"] for a in task["attempt_log"]] == ["lost"] * 4
    assert stack.wait_status(session, after, TERMINAL, timeout=60)["status"] == "completed"
