"""The whole path with real processes: HTTP -> row -> django-q2 -> worker -> row."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = [pytest.mark.e2e]


def test_a_task_runs_on_a_real_cluster_and_its_output_is_served(stack):
    session = stack.login()
    task_id = stack.submit(session, "primes", {"limit": 100_000})

    stack.wait_status(session, task_id, "completed", timeout=30)
    status = session.get(f"{stack.base}/tasks/status/{task_id}", timeout=10)
    completed = session.get(f"{stack.base}/tasks/completed/{task_id}", timeout=10)

    assert status.status_code == 200
    assert status.json()["status"] == "completed"
    assert completed.status_code == 200
    assert completed.json()["Task"] == "completed"
    assert completed.json()["output"] == {"limit": 100_000, "count": 9592, "largest": 99991}


def test_the_default_task_reports_progress_while_it_runs(stack):
    session = stack.login()
    response = session.post(stack.base + "/tasks", timeout=10)
    assert response.status_code == 202
    task_id = response.json()["task_id"]

    running = stack.wait_status(session, task_id, ["in_progress", "completed"])
    done = stack.wait_status(session, task_id, "completed")

    assert running["status"] in ("in_progress", "completed")
    assert done["progress"]["percent"] == 100
    assert done["output"]["message"] == "Task completed"
    assert [a["outcome"] for a in done["attempt_log"]] == ["completed"]


def test_concurrent_clients_and_workers_write_without_errors(stack):
    sessions = [stack.login("alice"), stack.login("bob")]

    def create(i):
        session = sessions[i % 2]
        response = session.post(
            stack.base + "/tasks",
            json={"type": "wordcount", "args": {"text": f"task {i} " * 50}},
            timeout=30,
        )
        status = session.get(f"{stack.base}/tasks?status=queued", timeout=30)
        return response.status_code, status.status_code, response.json().get("task_id"), i % 2

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(create, range(80)))

    assert [r for r in results if r[0] != 202 or r[1] != 200] == []
    for _, _, task_id, who in results:
        done = stack.wait_status(sessions[who], task_id, ["completed", "failed"], timeout=60)
        assert done["status"] == "completed", done
        assert done["output"]["words"] == 100
    logs = stack.all_logs()
    assert "database is locked" not in logs
    assert '" 500 ' not in logs and "Traceback" not in logs
    assert " ERROR " not in logs, [line for line in logs.splitlines() if " ERROR " in line][:5]


def test_another_users_task_is_not_found_over_http(stack):
    alice, bob = stack.login("alice"), stack.login("bob")
    task_id = stack.submit(alice, "wordcount", {"text": "private"})

    for path in (f"/tasks/{task_id}", f"/tasks/status/{task_id}", f"/tasks/completed/{task_id}"):
        response = bob.get(stack.base + path, timeout=10)
        assert response.status_code == 404
        assert response.json() == {"error": "Task not found", "code": "not_found"}
    assert requests.get(f"{stack.base}/tasks/{task_id}", timeout=10).status_code == 401


def test_a_task_longer_than_its_lease_keeps_it_and_runs_once(stack):
    # The stack's lease is 3 s, renewed every 0.5 s by the worker process.
    session = stack.login()
    task_id = stack.submit(session, "test.sleep", {"seconds": 5})

    done = stack.wait_status(session, task_id, ["completed", "failed"], timeout=60)

    assert done["status"] == "completed"
    assert done["attempts"] == 1
    assert [a["outcome"] for a in done["attempt_log"]] == ["completed"]
    assert "recovered" not in stack.log("cluster")
