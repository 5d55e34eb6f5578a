"""Webhooks sent by a real cluster to a receiver on loopback (so with
WEBHOOK_ALLOW_PRIVATE on): every delivery verifies with the Standard
Webhooks library, one answered 500 comes again with the same webhook-id,
and a receiver that holds its answers delays no task. Without the switch
the same loopback target is refused."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from tests.webhook_receiver import Receiver

from .harness import HTTP_TIMEOUT, wait_for

pytestmark = [pytest.mark.e2e]

SENDING = {
    "WEBHOOK_ALLOW_PRIVATE": "True",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "WEBHOOK_POLL_SECONDS": "0.2",
    # The receiver holds its first answers until the test lets them go.
    "WEBHOOK_TIMEOUT_SECONDS": "20",
}


@pytest.fixture
def receiver():
    receiver = Receiver(script=[(500, b"not now", 0.0), (200, b"ok", 0.0)]).start()
    yield receiver
    receiver.gate.set()
    receiver.stop()


def test_deliveries_are_signed_and_a_500_is_retried_with_the_same_id(make_stack, receiver):
    stack = make_stack(SENDING, users=("alice",))
    session = stack.login("alice")
    created = session.post(
        stack.base + "/webhooks",
        json={"url": receiver.url, "events": ["task.started", "task.completed"]},
        timeout=HTTP_TIMEOUT,
    )
    assert created.status_code == 201, created.text
    webhook = created.json()
    receiver.gate.clear()

    task_id = stack.submit(session, "test.echo", {"payload": {"n": 1}})

    # The task ends while the receiver still holds the first delivery.
    finished = stack.wait_status(session, task_id, "completed", timeout=60)
    wait_for(lambda: receiver.requests, 30, what="the first delivery to arrive")
    assert receiver.requests[0].status == 500
    receiver.gate.set()

    def both_delivered():
        grouped = receiver.by_id()
        answered = [[r.status for r in group] for group in grouped.values()]
        return len(grouped) == 2 and all(statuses[-1] == 200 for statuses in answered)

    wait_for(both_delivered, 60, what="both events delivered")
    grouped = receiver.by_id()
    retried = [group for group in grouped.values() if len(group) > 1]
    assert len(retried) == 1
    assert retried[0][0].status == 500
    assert len({r.body for r in retried[0]}) == 1  # the same body, signed again
    payloads = {}
    for request in receiver.requests:
        payload = Verifier(webhook["secret"]).verify(request.body, request.headers)
        assert payload["data"]["id"] == task_id
        payloads[payload["type"]] = payload
    assert set(payloads) == {"task.started", "task.completed"}
    # The task as GET showed it once it had ended.
    assert payloads["task.completed"]["data"] == finished
    assert payloads["task.started"]["data"]["status"] == "in_progress"

    def attempts_listed():
        response = session.get(
            f"{stack.base}/webhooks/{webhook['id']}/deliveries", timeout=HTTP_TIMEOUT
        )
        assert response.status_code == 200, response.text
        rows = response.json()["results"]
        done = len(rows) == 2 and all(row["state"] == "delivered" for row in rows)
        return rows if done else None

    rows = wait_for(attempts_listed, 30, what="the deliveries to show as delivered")
    codes = sorted([a["status_code"] for a in row["attempt_log"]] for row in rows)
    assert codes == [[200], [200, 500]]  # newest attempt first


def test_a_loopback_target_is_refused_without_the_switch(make_stack, receiver):
    stack = make_stack(users=("alice",), cluster=False)
    session = stack.login("alice")

    response = session.post(
        stack.base + "/webhooks",
        json={"url": receiver.url, "events": ["task.completed"]},
        timeout=HTTP_TIMEOUT,
    )

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid"
    assert "refused" in response.json()["fields"]["url"][0]
    assert receiver.requests == []
