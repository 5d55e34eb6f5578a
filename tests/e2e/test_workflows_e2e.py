"""Dependencies and batches through real clusters: a chain of three from
one batch runs in order, a failed parent cancels its dependant, a fan-in
sees both parents' outputs."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import pytest

from .harness import HTTP_TIMEOUT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TERMINAL = {"completed", "failed", "cancelled"}


def batch(stack, session, items) -> list[int]:
    response = session.post(
        stack.base + "/tasks/batch", json={"tasks": items}, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 202, response.text
    return response.json()["task_ids"]


def finish(stack, session, ids, timeout=60) -> list[dict]:
    def done():
        tasks = [stack.task(session, i) for i in ids]
        return tasks if all(t["status"] in TERMINAL for t in tasks) else None

    return wait_for(done, timeout, interval=0.3, what=f"tasks {ids} to finish")


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_chain_failure_and_fan_in_on_two_clusters(make_stack):
    stack = make_stack()
    stack.start_cluster()
    session = stack.login()
    chain = batch(
        stack,
        session,
        [
            {"type": "test.record", "args": {"seconds": 0.3}},
            {"type": "test.record", "args": {"seconds": 0.3}, "depends_on": ["$0"]},
            {"type": "test.record", "args": {"seconds": 0.3}, "depends_on": ["$1"]},
        ],
    )
    broken = batch(
        stack,
        session,
        [
            {"type": "test.fail", "args": {"message": "parent broke"}},
            {"type": "test.echo", "args": {"payload": 1}, "depends_on": ["$0"]},
        ],
    )
    fan = batch(
        stack,
        session,
        [
            {"type": "test.join", "args": {"label": "left"}},
            {"type": "test.join", "args": {"label": "right"}},
            {"type": "test.join", "args": {"label": "join"}, "depends_on": ["$0", "$1"]},
        ],
    )
    tasks = finish(stack, session, chain)
    assert [t["status"] for t in tasks] == ["completed"] * 3
    for earlier, later in pairwise(tasks):
        assert at(earlier["finished_at"]) <= at(later["started_at"])
    # The record file says the same, in the order the workers ran them.
    lines = (stack.tmp_path / "records.txt").read_text().split()
    assert [int(line.split(":")[0]) for line in lines] == chain

    parent, child = finish(stack, session, broken)
    assert parent["status"] == "failed"
    assert child["status"] == "cancelled" and child["attempts"] == 0
    assert str(broken[0]) in child["error"]["message"]

    left, right, joined = finish(stack, session, fan)
    assert joined["status"] == "completed"
    assert joined["output"]["parents"] == {
        str(fan[0]): left["output"],
        str(fan[1]): right["output"],
    }
    assert at(joined["started_at"]) >= max(at(left["finished_at"]), at(right["finished_at"]))
