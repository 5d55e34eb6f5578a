"""The django.tasks backend on real processes: Django code in one process
enqueues `@task` functions, a real cluster runs them, and the results come
back through django-tasks' result API."""

from __future__ import annotations

import json

import pytest

from .harness import HTTP_TIMEOUT, pid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Run by `manage.py shell` against the stack's database: enqueue, then poll
# each result with a deadline (refresh() reads the row again).
ENQUEUE_AND_WAIT = """
import json, time
from tests.testapp import background

results = [
    background.add.enqueue(20, 22),
    background.describe.enqueue("e2e"),
    background.explode.enqueue("far away"),
]
queued = [str(r.status) for r in results]
deadline = time.monotonic() + 90
while not all(r.is_finished for r in results) and time.monotonic() < deadline:
    time.sleep(0.2)
    for r in results:
        r.refresh()
again = [background.add.get_result(results[0].id)]
print(json.dumps({
    "queued": queued,
    "results": [
        {
            "id": r.id,
            "status": str(r.status),
            "value": r.return_value if str(r.status) == "SUCCESSFUL" else None,
            "errors": [e.exception_class_path for e in r.errors],
            "tracebacks": [e.traceback for e in r.errors],
            "workers": r.worker_ids,
        }
        for r in results + again
    ],
}))
"""


def test_task_functions_run_on_the_cluster_and_answer_through_get_result(stack):
    done = stack.manage("shell", "-c", ENQUEUE_AND_WAIT)
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["queued"] == ["READY", "READY", "READY"]
    add, describe, explode, add_again = report["results"]
    assert add["status"] == "SUCCESSFUL" and add["value"] == 42
    assert describe["status"] == "SUCCESSFUL"
    assert describe["value"] == {"tag": "e2e", "attempt": 1, "id": describe["id"]}
    assert explode["status"] == "FAILED"
    assert explode["errors"] == ["builtins.ValueError"]
    assert "far away" in explode["tracebacks"][0]
    assert add_again == add

    # Ran by the cluster's workers, as rows of the task table.
    cluster_pids = stack.cluster.pids()
    for result in (add, describe, explode):
        assert len(result["workers"]) == 1
        assert pid_of(result["workers"][0]) in cluster_pids
    rows = stack.db(
        "SELECT t.id, t.type, t.status, u.username FROM tasks_task t "
        "JOIN auth_user u ON u.id = t.owner_id ORDER BY t.id"
    )
    assert [(str(i), kind, status, user) for i, kind, status, user in rows] == [
        (add["id"], "django_tasks", "completed", "django-tasks"),
        (describe["id"], "django_tasks", "completed", "django-tasks"),
        (explode["id"], "django_tasks", "failed", "django-tasks"),
    ]


def test_a_request_cannot_submit_the_internal_type(stack):
    alice = stack.login("alice")
    response = alice.post(
        f"{stack.base}/tasks",
        json={"type": "django_tasks", "args": {"task": "os.system", "backend": "default"}},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 400, response.text
    assert stack.db("SELECT COUNT(*) FROM tasks_task") == [(0,)]
