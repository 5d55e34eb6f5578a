"""Throttles (login per IP and per username, task creation per user), the
per-user cap on unfinished tasks, and the size limits on args and output."""

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.throttles import TaskCreateThrottle
from tasks.models import Status, Task

from .backends import redis_url, uses_redis
from .conftest import PASSWORD


def rates(**overrides):
    from django.conf import settings

    rest = settings.REST_FRAMEWORK
    return override_settings(
        REST_FRAMEWORK={
            **rest,
            "DEFAULT_THROTTLE_RATES": {**rest["DEFAULT_THROTTLE_RATES"], **overrides},
        }
    )


def assert_throttled(response, period=60):
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= period
    body = response.json()
    assert body["retry_after"] == retry_after
    assert body["error"].startswith("Too many requests")


def login(username, password=PASSWORD, ip="10.0.0.1"):
    return APIClient(REMOTE_ADDR=ip).post(
        "/login", {"username": username, "password": password}, format="json"
    )


@rates(login_username="3/min", login_ip="1000/min")
def test_login_is_throttled_per_username_across_addresses(owner, outsider):
    answers = [login("owner", "wrong", ip=f"10.0.0.{i}").status_code for i in range(3)]
    fourth = login("owner", ip="10.0.0.99")

    assert answers == [401, 401, 401]
    assert_throttled(fourth)
    assert "Token" not in fourth.json()
    # Another username is not affected.
    assert login("outsider").status_code == 200


@rates(login_username="1000/min", login_ip="3/min")
def test_login_is_throttled_per_address_across_usernames(owner):
    answers = [login(f"user{i}", "wrong").status_code for i in range(3)]

    assert answers == [401, 401, 401]
    assert_throttled(login("owner"))
    assert login("owner", ip="10.0.0.2").status_code == 200


@rates(task_create="2/min")
def test_task_creation_is_throttled_per_user(api, outsider_api, owner):
    body = {"type": "wordcount", "args": {"text": "hi"}, "delay": 600}
    created = [api.post("/tasks", body, format="json").status_code for _ in range(2)]
    third = api.post("/tasks", body, format="json")

    assert created == [202, 202]
    assert_throttled(third)
    assert Task.objects.filter(owner=owner).count() == 2
    # Reading is not throttled, and other users still create.
    assert api.get("/tasks").status_code == 200
    assert outsider_api.post("/tasks", body, format="json").status_code == 202


def test_the_unfinished_tasks_cap_answers_429(api, outsider_api, owner, settings):
    settings.TASKS = {**settings.TASKS, "MAX_UNFINISHED_PER_USER": 2}
    body = {"type": "wordcount", "args": {"text": "hi"}, "delay": 600}
    assert [api.post("/tasks", body, format="json").status_code for _ in range(2)] == [202, 202]

    refused = api.post("/tasks", body, format="json")

    assert refused.status_code == 429
    assert refused.json() == {
        "error": "You already have 2 unfinished tasks; wait for some to finish.",
        "code": "cap_reached",
        "limit": 2,
    }
    assert Task.objects.filter(owner=owner).count() == 2
    assert outsider_api.post("/tasks", body, format="json").status_code == 202
    # Once one finishes (here: is cancelled), there is room again.
    first = Task.objects.filter(owner=owner).order_by("id").first()
    assert api.post(f"/tasks/{first.pk}/cancel").status_code == 200
    assert api.post("/tasks", body, format="json").status_code == 202


def test_args_over_the_limit_are_refused_naming_it(api, settings):
    settings.TASKS = {**settings.TASKS, "MAX_ARGS_BYTES": 100}

    response = api.post("/tasks", {"type": "wordcount", "args": {"text": "x" * 200}}, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == {"args": ["Arguments are larger than 100 bytes."]}
    assert Task.objects.count() == 0


def test_an_output_over_the_limit_is_stored_truncated_and_flagged(api, run_jobs, settings):
    settings.TASKS = {**settings.TASKS, "MAX_OUTPUT_BYTES": 5000}

    response = run_jobs(api.post, "/tasks", {"type": "test.big_output"}, format="json")
    task_id = response.json()["task_id"]
    detail = api.get(f"/tasks/{task_id}").json()
    completed = api.get(f"/tasks/completed/{task_id}").json()

    task = Task.objects.get(pk=task_id)
    assert task.status == Status.COMPLETED
    assert task.output_truncated is True
    assert task.output["truncated"] is True
    assert task.output["size"] > 200_000
    assert task.output["head"].startswith('{"data": "xxx')
    assert len(task.output["head"]) <= 5000
    assert detail["output_truncated"] is True
    assert detail["output"] == task.output
    assert completed["output"] == task.output


def test_the_output_limit_counts_utf8_bytes_not_characters(api, run_jobs, settings):
    settings.TASKS = {**settings.TASKS, "MAX_OUTPUT_BYTES": 5000}
    # 3000 characters of two bytes each: within the limit in characters, not in bytes.
    wide = "é" * 3000
    narrow = "e" * 3000

    over = run_jobs(
        api.post, "/tasks", {"type": "test.echo", "args": {"payload": wide}}, format="json"
    )
    under = run_jobs(
        api.post, "/tasks", {"type": "test.echo", "args": {"payload": narrow}}, format="json"
    )

    truncated = Task.objects.get(pk=over.json()["task_id"])
    assert truncated.status == Status.COMPLETED
    assert truncated.output_truncated is True
    assert truncated.output["size"] > 6000
    head = truncated.output["head"]
    assert head.startswith('{"payload": "ééé')
    assert len(head.encode()) <= 5000
    assert "\ufffd" not in head  # never cut inside a character
    detail = api.get(f"/tasks/{truncated.pk}").json()
    assert detail["output_truncated"] is True
    assert detail["output"] == truncated.output
    whole = Task.objects.get(pk=under.json()["task_id"])
    assert whole.output_truncated is False
    assert whole.output == {"payload": narrow}


def test_an_output_under_the_limit_is_stored_whole(api, run_jobs):
    response = run_jobs(api.post, "/tasks", {"type": "test.big_output"}, format="json")

    task = Task.objects.get(pk=response.json()["task_id"])
    assert task.output_truncated is False
    assert task.output == {"data": "x" * 200_000}


@pytest.mark.parametrize(("rate", "period"), [("5/min", 60), ("20/hour", 3600)])
def test_throttle_rates_come_from_settings(rate, period, owner):
    with rates(login_ip=rate, login_username="1000/min"):
        limit = int(rate.split("/")[0])
        answers = [login("owner").status_code for _ in range(limit)]
        assert answers == [200] * limit
        assert_throttled(login("owner"), period)


@rates(task_create="3/min")
def test_a_new_window_lets_requests_through_again(api, throttle_clock):
    body = {"type": "wordcount", "args": {"text": "hi"}, "delay": 600}
    throttle_clock[0] += 45  # 46 s into the minute
    assert [api.post("/tasks", body, format="json").status_code for _ in range(3)] == [202] * 3

    refused = api.post("/tasks", body, format="json")
    assert_throttled(refused)
    # Retry-After is the rest of the window, rounded up: 14 s.
    assert refused["Retry-After"] == "14"

    throttle_clock[0] += 13.5  # still inside the window
    assert api.post("/tasks", body, format="json").status_code == 429
    throttle_clock[0] += 0.5  # the next minute
    assert api.post("/tasks", body, format="json").status_code == 202
    assert Task.objects.count() == 4


def count_passing_together(throttle_class, request, threads=16, each=10) -> int:
    """How many of threads x each checks pass when the threads run at once."""
    start = threading.Barrier(threads)

    def hammer():
        start.wait()
        return sum(throttle_class().allow_request(request, None) for _ in range(each))

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda _: hammer(), range(threads)))


@rates(task_create="50/min")
def test_requests_arriving_together_cannot_pass_the_throttle_beyond_its_rate(owner):
    request = SimpleNamespace(user=owner)

    assert count_passing_together(TaskCreateThrottle, request) == 50


@pytest.mark.skipif(not uses_redis(), reason="needs Redis: runs under make test-pg")
@rates(task_create="50/min")
def test_processes_sharing_a_redis_cache_count_together(owner, settings):
    # Each check is a round trip to Redis here, so a read-change-write count
    # (DRF's own throttle) lets most of the 160 concurrent checks through.
    url = redis_url().rsplit("/", 1)[0] + "/11"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    }
    cache.clear()
    try:
        assert count_passing_together(TaskCreateThrottle, SimpleNamespace(user=owner)) == 50
    finally:
        cache.clear()
