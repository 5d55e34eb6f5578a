"""/health and /metrics against a real web server and a real cluster."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .harness import PASSWORD, Stack, wait_for

pytestmark = [pytest.mark.e2e]

METRICS_TOKEN = "e2e-metrics-token"


@pytest.fixture
def web_only(tmp_path, request):
    """A migrated database and a web server; the test starts the cluster."""
    stack = Stack(tmp_path, env={"TASK_WORKER_STALE_SECONDS": "8", "METRICS_TOKEN": METRICS_TOKEN})
    try:
        stack.manage("migrate", "--no-input")
        stack.start_web()
        yield stack
    finally:
        stack.stop()
        if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
            print(stack.all_logs()[-20000:])


def health(stack):
    response = requests.get(stack.base + "/health", timeout=10)
    return response.status_code, response.json()


def test_health_follows_the_workers_heartbeat(web_only):
    stack = web_only
    code, body = health(stack)
    assert code == 503
    assert body["checks"] == {
        "database": {"ok": True},
        "workers": {"ok": False, "alive": 0, "stale_after_seconds": 8},
    }

    stack.start_cluster()
    code, body = wait_for(
        lambda: (result := health(stack))[0] == 200 and result,
        60,
        what="/health to turn 200 once the cluster's heartbeat arrives",
    )
    assert body["status"] == "ok"
    assert body["checks"]["workers"]["alive"] >= 1
    # Nothing submitted yet: no queue has tasks waiting.
    assert body["queues"] == {}

    stack.kill_cluster()
    code, body = wait_for(
        lambda: (result := health(stack))[0] == 503 and result,
        30,
        what="/health to turn 503 once the heartbeats are stale",
    )
    assert "no worker" in body["error"]


def test_metrics_observe_a_task_run_by_the_cluster(web_only):
    stack = web_only
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user('alice', password={PASSWORD!r})",
    )
    stack.start_cluster()
    session = stack.login("alice")
    task_id = stack.submit(session, "wordcount", {"text": "a b c"})
    stack.wait_status(session, task_id, "completed")

    response = requests.get(
        stack.base + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("task_runner_tasks", (("status", "completed"), ("type", "wordcount")))] == 1
    duration_count = ("task_runner_recent_task_duration_seconds_count", (("type", "wordcount"),))
    assert samples[duration_count] == 1
    assert requests.get(stack.base + "/metrics", timeout=10).status_code == 401
    assert session.get(stack.base + "/metrics", timeout=10).status_code == 403
