"""Schedules fired by real clusters: two of them on one database (PostgreSQL
under `make test-pg`), each firing due schedules from its housekeeping.

Every fire is one task (no duplicate `scheduled_for`), a pause stops the
fires at once, each catch-up policy after the clusters were down, and
overlap skip with a task slower than the interval.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from .conftest import failed
from .harness import HTTP_TIMEOUT, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("schedules"))
    try:
        yield stack.start(("alice",), cluster=False)
    finally:
        stack.stop()


@pytest.fixture
def stack(shared, request):
    """The module's stack with two clusters; they go when the test ends."""
    shared.start_cluster()
    shared.start_cluster()
    yield shared
    for cluster in shared.clusters:
        cluster.kill()
    shared.clusters.clear()
    if failed(request):
        print(shared.all_logs(tail=8000))
    shared.db("UPDATE tasks_schedule SET enabled = %s, next_run_at = NULL", [False])


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def create(stack: Stack, session, **body) -> dict:
    response = session.post(stack.base + "/schedules", json=body, timeout=HTTP_TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()


def schedule(stack: Stack, session, schedule_id: int) -> dict:
    response = session.get(f"{stack.base}/schedules/{schedule_id}", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def fired(stack: Stack, session, schedule_id: int) -> list[dict]:
    """The schedule's tasks, by scheduled time."""
    url = f"{stack.base}/tasks?schedule={schedule_id}&page_size=200"
    tasks: list[dict] = []
    while url:
        body = session.get(url, timeout=HTTP_TIMEOUT).json()
        tasks += body["results"]
        url = body["next"]
    return sorted(tasks, key=lambda t: t["scheduled_for"])


def test_an_interval_schedule_fires_once_per_time_on_two_clusters_and_pause_stops_it(stack):
    session = stack.login()
    for cluster in stack.clusters:
        cluster.wait_workers(2)
    made = create(
        stack, session, type="test.echo", args={"payload": "tick"}, interval=1, overlap="allow"
    )
    wait_for(lambda: len(fired(stack, session, made["id"])) >= 8, 40, interval=0.5, what="8 fires")
    paused = session.patch(
        f"{stack.base}/schedules/{made['id']}", json={"enabled": False}, timeout=HTTP_TIMEOUT
    )
    assert paused.status_code == 200 and paused.json()["next_run_at"] is None
    count_at_pause = len(fired(stack, session, made["id"]))
    time.sleep(3)  # three intervals: a paused schedule must fire none of them
    tasks = fired(stack, session, made["id"])
    assert len(tasks) == count_at_pause

    times = [when(t["scheduled_for"]) for t in tasks]
    assert len(set(times)) == len(times), "a time fired twice"
    # One per second, on the schedule's phase, with none missing.
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(times)), times
    detail = schedule(stack, session, made["id"])
    assert detail["fired_count"] == len(tasks) and detail["skipped_count"] == 0
    done = wait_for(
        lambda: all(t["status"] == "completed" for t in fired(stack, session, made["id"])),
        30,
        what="the fired tasks to complete",
    )
    assert done
    # Both clusters fire (whichever looks first); each time was fired by one.
    rows = stack.db(
        "SELECT scheduled_for, COUNT(*) FROM tasks_task WHERE schedule_id = %s "
        "GROUP BY scheduled_for HAVING COUNT(*) > 1",
        [made["id"]],
    )
    assert rows == []


def test_catch_up_policies_after_the_clusters_were_down(stack):
    session = stack.login()
    for cluster in stack.clusters:
        cluster.wait_workers(2)
    made = {
        policy: create(
            stack,
            session,
            name=policy,
            type="test.echo",
            args={"payload": policy},
            interval=1,
            catch_up=policy,
            overlap="allow",
        )
        for policy in ("skip", "once", "all")
    }
    wait_for(
        lambda: all(len(fired(stack, session, s["id"])) >= 2 for s in made.values()),
        30,
        what="every schedule to fire twice",
    )
    for cluster in stack.clusters:
        cluster.stop()
    down_at = datetime.now(UTC)
    time.sleep(6)
    back_at = datetime.now(UTC)
    stack.start_cluster()
    stack.start_cluster()

    def caught_up():
        return all(
            when(schedule(stack, session, s["id"])["next_run_at"]) > back_at + timedelta(seconds=2)
            for s in made.values()
        )

    wait_for(caught_up, 60, interval=0.5, what="the clusters to fire again")
    # Missed times: those the clusters were down for (and booting, less the
    # grace a just-due time gets).
    missed, late = {}, {}
    for policy, s in made.items():
        tasks = fired(stack, session, s["id"])
        times = [when(t["scheduled_for"]) for t in tasks]
        assert len(set(times)) == len(times)
        missed[policy] = [t for t in times if down_at < t < back_at]
        # Fires created more than the grace after their time: catch-up fires.
        late[policy] = [
            when(t["scheduled_for"])
            for t in tasks
            if when(t["scheduled_for"]) > down_at
            and when(t["created_at"]) - when(t["scheduled_for"]) > timedelta(seconds=1)
        ]
    # Skip fires none of them, but for a time less than ON_TIME_GRACE before
    # the clusters were up again: that one is on time, and back_at was taken
    # before they booted.
    grace = back_at - timedelta(seconds=1)
    assert [t for t in missed["skip"] if t < grace] == [], (missed, back_at)
    assert len(missed["skip"]) <= 1, missed
    assert schedule(stack, session, made["skip"]["id"])["skipped_count"] >= 5
    # One fire stands for every missed time (the latest of them, which may
    # fall while the clusters were starting again). As with skip, a time
    # within the grace before the clusters were up fires on time beside it.
    assert len([t for t in missed["once"] if t < grace]) <= 1 and late["once"], (missed, late)
    assert schedule(stack, session, made["once"]["id"])["skipped_count"] >= 4
    # Every second of the outage fired (five or six of them).
    assert len(missed["all"]) >= 5, missed
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(missed["all"])), missed
    assert schedule(stack, session, made["all"]["id"])["skipped_count"] == 0


def test_overlap_skip_never_runs_two_at_once_and_counts_what_it_skipped(stack):
    session = stack.login()
    for cluster in stack.clusters:
        cluster.wait_workers(2)
    made = create(
        stack, session, type="test.sleep", args={"seconds": 2.5}, interval=1, overlap="skip"
    )
    wait_for(
        lambda: sum(t["status"] == "completed" for t in fired(stack, session, made["id"])) >= 3,
        60,
        interval=0.5,
        what="three slow tasks to complete",
    )
    session.patch(f"{stack.base}/schedules/{made['id']}", json={"enabled": False})
    wait_for(
        lambda: all(t["status"] == "completed" for t in fired(stack, session, made["id"])),
        30,
        what="the last slow task to complete",
    )
    tasks = fired(stack, session, made["id"])
    for earlier, later in pairwise(tasks):
        # A time fires only once the previous task finished.
        assert when(later["created_at"]) >= when(earlier["finished_at"]), (earlier, later)
    assert schedule(stack, session, made["id"])["skipped_count"] >= 2 * (len(tasks) - 1)
