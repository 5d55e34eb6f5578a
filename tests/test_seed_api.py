"""The seed's four routes, as SPEC.md section 3 describes them."""

import pytest
from rest_framework.test import APIClient

from tasks.models import Status, Task

pytestmark = pytest.mark.django_db


def test_an_empty_post_starts_the_default_task(api, owner, run_jobs):
    response = run_jobs(api.post, "/tasks")

    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "Task started"
    assert response["Location"] == f"/tasks/{body['task_id']}"
    task = Task.objects.get(pk=body["task_id"])
    assert task.owner == owner
    assert task.type == "demo"
    assert task.status == Status.COMPLETED
    assert task.output["message"] == "Task completed"
    assert task.attempts == 1


@pytest.mark.parametrize("path", ["/tasks", "/tasks/"])
def test_a_post_with_or_without_trailing_slash_creates_one_task(api, path):
    response = api.post(path, {"type": "wordcount", "args": {"text": "a b"}}, format="json")

    assert response.status_code == 202
    assert Task.objects.count() == 1


def test_a_typed_task_computes_its_output(api, run_jobs):
    response = run_jobs(
        api.post, "/tasks", {"type": "primes", "args": {"limit": 100}}, format="json"
    )
    task_id = response.json()["task_id"]

    completed = api.get(f"/tasks/completed/{task_id}")

    assert completed.status_code == 200
    assert completed.json()["Task"] == "completed"
    assert completed.json()["output"] == {"limit": 100, "count": 25, "largest": 97}


def test_status_shows_the_state_and_progress(api, owner):
    task = Task.objects.create(owner=owner, type="demo", timeout=60, progress=40)

    response = api.get(f"/tasks/status/{task.pk}")

    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert response.json()["progress"] == 40


@pytest.mark.parametrize("state", [Status.QUEUED, Status.IN_PROGRESS])
def test_completed_says_not_yet_while_it_may_still_finish(api, owner, state):
    task = Task.objects.create(owner=owner, type="demo", timeout=60, status=state)

    response = api.get(f"/tasks/completed/{task.pk}/")

    assert response.status_code == 202
    assert response.json()["error"] == "Task not completed yet"
    assert response.json()["status"] == state


@pytest.mark.parametrize("state", [Status.FAILED, Status.CANCELLED])
def test_completed_is_a_conflict_once_it_never_will(api, owner, state):
    task = Task.objects.create(
        owner=owner, type="demo", timeout=60, status=state, error={"message": "boom"}
    )

    response = api.get(f"/tasks/completed/{task.pk}")

    assert response.status_code == 409
    assert response.json()["status"] == state
    assert response.json()["error"].startswith(f"Task {state}")


def test_a_failing_task_records_its_error(api, run_jobs):
    response = run_jobs(
        api.post, "/tasks", {"type": "test.fail", "args": {"message": "nope"}}, format="json"
    )
    task = Task.objects.get(pk=response.json()["task_id"])

    assert task.status == Status.FAILED
    assert task.error["message"] == "nope"
    assert task.error["type"] == "ValueError"
    assert "Traceback" in task.error["traceback"]
    detail = api.get(f"/tasks/{task.pk}").json()
    assert detail["error"] == {"message": "nope", "type": "ValueError"}


def test_staff_see_the_traceback(make_user, run_jobs):
    from .conftest import client_for

    staff = client_for(make_user("root", is_staff=True))
    task_id = run_jobs(staff.post, "/tasks", {"type": "test.fail"}, format="json").json()["task_id"]

    assert "Traceback" in staff.get(f"/tasks/{task_id}").json()["error"]["traceback"]


@pytest.mark.parametrize("route", ["/tasks/status/{}", "/tasks/completed/{}", "/tasks/{}"])
def test_another_users_task_is_not_found(outsider_api, owner, route):
    task = Task.objects.create(owner=owner, type="demo", timeout=60)

    response = outsider_api.get(route.format(task.pk))

    assert response.status_code == 404
    assert response.json() == {"error": "Task not found", "code": "not_found"}


@pytest.mark.parametrize("raw", ["999999", "0", "-1", "9" * 30])
def test_unknown_ids_are_not_found(api, raw):
    response = api.get(f"/tasks/status/{raw}")

    assert response.status_code == 404
    assert response.json() == {"error": "Task not found", "code": "not_found"}


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "%C2%B2"])
def test_a_non_integer_id_is_a_bad_request(api, raw):
    response = api.get(f"/tasks/completed/{raw}")

    assert response.status_code == 400
    assert response.json()["fields"] == {"id": ["A task id is an integer."]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tasks"),
        ("get", "/tasks"),
        ("get", "/tasks/status/1"),
        ("get", "/tasks/completed/1"),
    ],
)
@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer not.a.jwt", "Token abc", "Basic Zm9vOmJhcg=="]
)
def test_every_task_route_needs_a_valid_bearer_token(db, method, path, header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)

    response = getattr(client, method)(path)

    assert response.status_code == 401
    assert "error" in response.json()
    assert Task.objects.count() == 0


def test_malformed_json_is_rejected_and_nothing_is_queued(api):
    response = api.post("/tasks", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert "error" in response.json()
    assert Task.objects.count() == 0


def test_an_unknown_type_is_a_field_error(api):
    response = api.post("/tasks", {"type": "os.system", "args": {}}, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == {"type": ["Unknown task type 'os.system'."]}
    assert Task.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"limit": "many"}, "limit"),
        ({"limit": 1}, "limit"),
        ({}, "limit"),
        ({"limit": 10, "shell": "rm -rf /"}, "shell"),
    ],
)
def test_bad_arguments_are_field_errors_before_anything_is_queued(api, args, field):
    response = api.post("/tasks", {"type": "primes", "args": args}, format="json")

    assert response.status_code == 400
    assert field in response.json()["fields"]["args"]
    assert Task.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"type": "demo", "args": [1, 2]},
        {"type": "demo", "timeout": 0},
        {"type": "demo", "timeout": "soon"},
        {"type": "demo", "unexpected": True},
        {"type": ["demo"]},
    ],
)
def test_a_bad_body_is_a_400(api, body):
    response = api.post("/tasks", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]
    assert Task.objects.count() == 0


def test_the_list_holds_only_the_callers_tasks_newest_first(api, owner, outsider):
    mine = [Task.objects.create(owner=owner, type="demo", timeout=60) for _ in range(3)]
    Task.objects.create(owner=outsider, type="demo", timeout=60)

    response = api.get("/tasks")

    assert response.status_code == 200
    assert [t["id"] for t in response.json()["results"]] == [t.pk for t in reversed(mine)]
