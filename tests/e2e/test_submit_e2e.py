"""Submitting over real HTTP to several web processes: unique keys, and the
per-user cap on unfinished tasks when many clients race for its last places."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import failed
from .harness import HTTP_TIMEOUT, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAP = 3
SUBMITTERS = 8
LONG = 60  # seconds: tasks that stay unfinished until the test cancels them


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    stack = Stack(
        tmp_path_factory.mktemp("submit"),
        env={"TASK_MAX_UNFINISHED_PER_USER": str(CAP)},
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture
def capped(shared, request):
    yield shared
    if failed(request):
        print(shared.all_logs(tail=8000))


def unfinished(stack: Stack, username: str) -> list[int]:
    return [
        task_id
        for (task_id,) in stack.db(
            "SELECT t.id FROM tasks_task t JOIN auth_user u ON u.id = t.owner_id "
            "WHERE u.username = %s AND t.status IN ('queued', 'in_progress') ORDER BY t.id",
            [username],
        )
    ]


def cancel_and_wait(stack: Stack, session, ids) -> None:
    for task_id in ids:
        stack.cancel(session, task_id)
    for task_id in ids:
        assert stack.wait_status(session, task_id, "cancelled", timeout=30)["status"] == "cancelled"


def test_a_unique_key_returns_the_unfinished_task_instead_of_a_new_one(capped):
    stack = capped
    alice, bob = stack.login("alice"), stack.login("bob")

    def post(session, args):
        return session.post(
            f"{stack.base}/tasks",
            json={"type": "test.hold", "args": args, "unique_key": "nightly-report"},
            timeout=HTTP_TIMEOUT,
        )

    first = post(alice, {"seconds": LONG})
    again = post(alice, {"seconds": 1})  # other args: the key alone decides
    other_owner = post(bob, {"seconds": LONG})

    assert first.status_code == 202, first.text
    assert "deduplicated" not in first.json()
    task_id = first.json()["task_id"]
    assert again.status_code == 200, again.text
    assert again.json()["task_id"] == task_id
    assert again.json()["deduplicated"] is True
    assert again.json()["message"] == "Task already exists"
    # Keys are the owner's own.
    assert other_owner.status_code == 202, other_owner.text
    assert other_owner.json()["task_id"] != task_id
    rows = stack.db(
        "SELECT id, args FROM tasks_task WHERE unique_key = %s ORDER BY id", ["nightly-report"]
    )
    assert [row[0] for row in rows] == [task_id, other_owner.json()["task_id"]]
    assert stack.task(alice, task_id)["unique_key"] == "nightly-report"

    # Once the task is finished, the key makes a new one.
    cancel_and_wait(stack, alice, [task_id])
    cancel_and_wait(stack, bob, [other_owner.json()["task_id"]])
    later = post(alice, {"seconds": 0})
    assert later.status_code == 202, later.text
    assert later.json()["task_id"] != task_id
    assert stack.wait_status(alice, later.json()["task_id"], "completed")["args"] == {"seconds": 0}


def test_the_unfinished_cap_holds_under_concurrent_submits(capped):
    stack = capped
    alice = stack.login("alice")
    token = alice.headers["Authorization"]
    assert unfinished(stack, "alice") == []

    for round_ in range(5):
        start = threading.Barrier(SUBMITTERS)

        def submit(i, start=start, round_=round_):
            start.wait(timeout=30)
            # requests.post: a new session, hence a new connection, per client.
            response = requests.post(
                f"{stack.base}/tasks",
                json={"type": "test.hold", "args": {"seconds": LONG + round_ + i / 100}},
                headers={"Authorization": token},
                timeout=HTTP_TIMEOUT,
            )
            return response.status_code, response.headers.get("Content-Type"), response.json()

        with ThreadPoolExecutor(max_workers=SUBMITTERS) as pool:
            answers = list(pool.map(submit, range(SUBMITTERS)))

        codes = Counter(code for code, _, _ in answers)
        assert codes == {202: CAP, 429: SUBMITTERS - CAP}, answers
        accepted = sorted(body["task_id"] for code, _, body in answers if code == 202)
        for code, content_type, body in answers:
            assert content_type.startswith("application/json")
            if code == 429:
                assert body["error"] == (
                    f"You already have {CAP} unfinished tasks; wait for some to finish."
                )
                assert body["limit"] == CAP
        assert unfinished(stack, "alice") == accepted

        cancel_and_wait(stack, alice, accepted)
        wait_for(lambda: unfinished(stack, "alice") == [], 30, what="alice's tasks to end")
