"""The catalogue, the filtered list (owner-scoped; staff with ?all=true) and
the long-poll `?wait=N`."""

import time
from datetime import timedelta

import jsonschema
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import registry
from tasks.models import Status, Task

from .conftest import client_for


def make_task(owner, type_="wordcount", status=Status.QUEUED, **extra):
    return Task.objects.create(owner=owner, type=type_, args={}, status=status, timeout=60, **extra)


# --- Catalogue ---------------------------------------------------------------


def test_the_catalogue_lists_every_registered_type_with_its_schema(api):
    response = api.get("/tasks/types")

    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()["types"]}
    assert set(types) == {t.name for t in registry.all_types()}
    primes = types["primes"]
    assert primes["timeout"] == 600
    assert primes["max_retries"] == 0
    assert "prime numbers" in primes["description"]
    assert primes["args_schema"] == {
        "type": "object",
        "properties": {
            "limit": {
                "type": "integer",
                "minimum": 2,
                "maximum": 50_000_000,
                "description": "Count the primes below this number.",
            }
        },
        "required": ["limit"],
        "additionalProperties": False,
    }
    assert types["wordcount"]["args_schema"]["properties"]["top"]["default"] == 10
    assert types["test.flaky"]["max_retries"] == 3


def test_the_catalogue_shows_each_types_queue_and_limits(api):
    types = {t["name"]: t for t in api.get("/tasks/types").json()["types"]}

    assert {k: types["test.limited"][k] for k in ("queue", "concurrency", "key_concurrency")} == {
        "queue": "default",
        "concurrency": 1,
        "key_concurrency": None,
    }
    assert (types["test.keyed"]["concurrency"], types["test.keyed"]["key_concurrency"]) == (
        None,
        1,
    )
    assert types["test.reports"]["queue"] == "reports"
    assert types["wordcount"]["queue"] == "default"
    assert types["wordcount"]["concurrency"] is None
    assert all(types[t.name]["queue"] == t.queue for t in registry.all_types())


def test_the_catalogue_answers_with_a_trailing_slash_and_needs_a_token(api):
    from rest_framework.test import APIClient

    assert api.get("/tasks/types/").status_code == 200
    assert APIClient().get("/tasks/types").status_code == 401


def test_catalogue_schemas_accept_what_validation_accepts_and_refuse_the_rest(api):
    schemas = {t["name"]: t["args_schema"] for t in api.get("/tasks/types").json()["types"]}
    cases = [
        ("primes", {"limit": 10}, True),
        ("primes", {"limit": 1}, False),
        ("primes", {}, False),
        ("primes", {"limit": 10, "extra": 1}, False),
        ("wordcount", {"text": "a b", "top": 3}, True),
        ("wordcount", {"text": "a", "top": 0}, False),
        ("demo", {}, True),
        ("demo", {"seconds": -1}, False),
    ]
    for name, args, valid in cases:
        schema_ok = jsonschema.Draft202012Validator(schemas[name]).is_valid(args)
        try:
            registry.get_type(name).validate_args(args)
            serializer_ok = True
        except Exception:
            serializer_ok = False
        assert schema_ok is serializer_ok is valid, (name, args)


# --- Listing -------------------------------------------------------------------


def test_the_list_shows_only_the_callers_tasks_newest_first(api, outsider_api, owner, outsider):
    mine = [make_task(owner) for _ in range(3)]
    theirs = make_task(outsider)

    body = api.get("/tasks").json()
    other = outsider_api.get("/tasks").json()

    assert [t["id"] for t in body["results"]] == [t.pk for t in reversed(mine)]
    assert {t["owner"] for t in body["results"]} == {"owner"}
    assert [t["id"] for t in other["results"]] == [theirs.pk]


def test_the_list_filters_by_status_type_and_created_range(api, owner):
    now = timezone.now()
    old = make_task(owner, created_at=now - timedelta(days=3))
    done = make_task(owner, status=Status.COMPLETED, type_="primes")
    failed = make_task(owner, status=Status.FAILED)
    queued = make_task(owner)

    def ids(query):
        if isinstance(query, str):
            response = api.get("/tasks?" + query)
        else:
            response = api.get("/tasks", query)
        assert response.status_code == 200, response.content
        return [t["id"] for t in response.json()["results"]]

    assert ids({"status": "completed"}) == [done.pk]
    assert ids("status=completed&status=failed") == [failed.pk, done.pk]
    assert ids({"type": "primes"}) == [done.pk]
    after = (now - timedelta(days=1)).isoformat()
    assert ids({"created_after": after}) == [queued.pk, failed.pk, done.pk]
    assert ids({"created_before": after}) == [old.pk]
    assert ids({"ordering": "id"}) == [old.pk, done.pk, failed.pk, queued.pk]
    assert ids({"ordering": "created_at"})[0] == old.pk


def test_the_list_filters_by_queue(api, owner, outsider):
    report = make_task(owner, type_="test.reports", queue="reports")
    make_task(owner)
    make_task(outsider, type_="test.reports", queue="reports")

    response = api.get("/tasks", {"queue": "reports"})
    nothing = api.get("/tasks", {"queue": "no-such-queue"})

    assert response.status_code == 200
    assert [t["id"] for t in response.json()["results"]] == [report.pk]
    assert response.json()["results"][0]["queue"] == "reports"
    assert nothing.status_code == 200
    assert nothing.json()["results"] == []


def test_filtering_the_list_never_asks_for_distinct_rows(api, owner):
    # SELECT DISTINCT over a user's whole history made a filtered first page
    # cost as much as the history on PostgreSQL.
    make_task(owner, type_="primes")
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/tasks?type=primes&type=wordcount&status=queued&status=failed")
    assert response.status_code == 200
    selects = [q["sql"] for q in queries if "tasks_task" in q["sql"]]
    assert selects and not [sql for sql in selects if "DISTINCT" in sql.upper()], selects


@pytest.mark.parametrize(
    "query",
    [
        {"status": "running"},
        {"type": "os.system"},
        {"created_after": "yesterday"},
        {"ordering": "owner__password"},
        {"all": "maybe"},
    ],
)
def test_bad_list_parameters_are_400(api, owner, query):
    make_task(owner)
    response = api.get("/tasks", query)
    assert response.status_code == 400, response.content
    assert response.json()["error"]
    assert response.json()["fields"]


@pytest.mark.parametrize(
    ("ordering", "newest_first"),
    [("", True), ("-id", True), ("id", False), ("-created_at", True), ("created_at", False)],
)
def test_cursor_pagination_walks_every_task_once(api, owner, ordering, newest_first):
    start = timezone.now()
    tasks = [make_task(owner, created_at=start + timedelta(seconds=i)) for i in range(7)]
    seen, url = [], f"/tasks?page_size=3&ordering={ordering}" if ordering else "/tasks?page_size=3"
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        seen += [t["id"] for t in response.json()["results"]]
        url = response.json()["next"]
    expected = [t.pk for t in tasks]
    assert seen == (expected[::-1] if newest_first else expected)


@pytest.mark.parametrize("path", ["/tasks", "/schedules", "/api-keys", "/webhooks"])
def test_bad_cursors_and_page_sizes_are_400s(api, owner, path):
    for query in (
        "cursor=garbage",
        "cursor=%00%ff",
        "page_size=0",
        "page_size=-1",
        "page_size=abc",
    ):
        response = api.get(f"{path}?{query}")
        assert response.status_code == 400, (query, response.content)
        assert response.json()["code"] == "invalid"
        assert set(response.json()["fields"]) == {query.split("=")[0]}
    # Above the most, the most (DRF's rule, as documented).
    assert api.get(f"{path}?page_size=100000").status_code == 200


def test_staff_list_everyone_only_when_asking(owner, outsider, make_user):
    staff = make_user("staff", is_staff=True)
    mine, theirs = make_task(staff), make_task(outsider)
    client = client_for(staff)

    default = client.get("/tasks").json()["results"]
    everyone = client.get("/tasks", {"all": "true"}).json()["results"]

    assert [t["id"] for t in default] == [mine.pk]
    assert {t["id"] for t in everyone} == {mine.pk, theirs.pk}
    assert {t["owner"] for t in everyone} == {"staff", "outsider"}


def test_non_staff_asking_for_everyone_is_refused(api, owner, outsider):
    make_task(outsider)

    response = api.get("/tasks", {"all": "true"})

    assert response.status_code == 403
    assert response.json() == {
        "error": "Only staff may list every user's tasks.",
        "code": "permission_denied",
    }
    assert api.get("/tasks", {"all": "false"}).status_code == 200


# --- Long-poll ------------------------------------------------------------------


def test_wait_answers_at_once_for_a_finished_task(api, owner):
    task = make_task(owner, status=Status.COMPLETED)
    started = time.monotonic()

    response = api.get(f"/tasks/{task.pk}", {"wait": 30})

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert time.monotonic() - started < 10


def test_wait_answers_after_n_seconds_with_the_current_state(api, owner):
    task = make_task(owner)
    started = time.monotonic()

    response = api.get(f"/tasks/{task.pk}", {"wait": 1})

    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert time.monotonic() - started >= 1


def test_wait_returns_as_soon_as_the_task_finishes(api, owner, monkeypatch):
    task = make_task(owner)
    reads = []
    real_task_of = __import__("tasks.selectors", fromlist=["task_of"]).task_of

    def task_of(**kwargs):
        # The third read sees the task finished, as if a worker had just completed it.
        reads.append(1)
        if len(reads) == 3:
            Task.objects.filter(pk=task.pk).transition(Status.IN_PROGRESS)
            Task.objects.filter(pk=task.pk).transition(Status.COMPLETED, output={"ok": 1})
        return real_task_of(**kwargs)

    monkeypatch.setattr("tasks.selectors.task_of", task_of)
    started = time.monotonic()
    response = api.get(f"/tasks/{task.pk}", {"wait": 30})

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["output"] == {"ok": 1}
    assert len(reads) == 3
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("wait", ["31", "-1", "abc", "1.5"])
def test_wait_out_of_range_is_400(api, owner, wait):
    task = make_task(owner)
    response = api.get(f"/tasks/{task.pk}", {"wait": wait})
    assert response.status_code == 400
    assert "wait" in response.json()["fields"]


def test_wait_on_another_users_task_is_404_at_once(outsider_api, owner):
    task = make_task(owner)
    started = time.monotonic()
    response = outsider_api.get(f"/tasks/{task.pk}", {"wait": 30})
    assert response.status_code == 404
    assert response.json() == {"error": "Task not found", "code": "not_found"}
    assert time.monotonic() - started < 10
