"""Every error answer has a machine-readable `code` beside its sentence, and
the code says what kind of error it is, on every endpoint."""

import base64

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts import services as key_services
from config.errors import CODES
from tasks.models import Status, Task

from .conftest import client_for

pytestmark = pytest.mark.django_db


class World:
    def __init__(self, make_user):
        self.owner = make_user("owner")
        self.outsider = make_user("outsider")
        self.staff = make_user("ops", is_staff=True)
        self.api = client_for(self.owner)
        self.outsider_api = client_for(self.outsider)
        self.anonymous = APIClient()
        self.queued = self._task(Status.QUEUED)
        self.completed = self._task(Status.COMPLETED, output={"ok": True})
        self.failed = self._task(Status.FAILED, error={"message": "boom"})
        self.key, self.raw_key = key_services.create_api_key(user=self.owner, name="ci")
        self.key_client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {self.raw_key}")

    def _task(self, status, **extra):
        return Task.objects.create(
            owner=self.owner,
            type="wordcount",
            args={"text": "t"},
            status=status,
            timeout=60,
            **extra,
        )

    def raw(self, client, method, path, body, content_type="application/json"):
        return client.generic(method, path, body, content_type=content_type)


# (request, status, code)
CASES = {
    # tasks
    "create: invalid args": (
        lambda w: w.api.post("/tasks", {"type": "primes", "args": {"limit": "x"}}, format="json"),
        400,
        "invalid",
    ),
    "create: unknown type": (
        lambda w: w.api.post("/tasks", {"type": "nope"}, format="json"),
        400,
        "invalid",
    ),
    "create: malformed json": (
        lambda w: w.raw(w.api, "POST", "/tasks", '{"type": '),
        400,
        "parse_error",
    ),
    "create: text/plain": (
        lambda w: w.raw(w.api, "POST", "/tasks", "x", "text/plain"),
        415,
        "unsupported_media_type",
    ),
    "create: no token": (
        lambda w: w.anonymous.post("/tasks", {}, format="json"),
        401,
        "not_authenticated",
    ),
    "create: bad token": (
        lambda w: APIClient(HTTP_AUTHORIZATION="Bearer a.b.c").post("/tasks", {}, format="json"),
        401,
        "authentication_failed",
    ),
    "create: reused idempotency key": (
        lambda w: [
            w.api.post(
                "/tasks",
                {"type": "wordcount", "args": {"text": t}, "delay": 60},
                format="json",
                HTTP_IDEMPOTENCY_KEY="k1",
            )
            for t in ("a", "b")
        ][-1],
        409,
        "conflict",
    ),
    "list: bad filter": (lambda w: w.api.get("/tasks?status=done"), 400, "invalid"),
    "list: all as non-staff": (
        lambda w: w.api.get("/tasks?all=true"),
        403,
        "permission_denied",
    ),
    "list: forged cursor": (
        lambda w: w.api.get("/tasks", {"cursor": base64.b64encode(b"p=abc").decode()}),
        400,
        "invalid",
    ),
    "create: chunked body to the development server": (
        lambda w: w.api.post(
            "/tasks", b"{}", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked"
        ),
        411,
        "length_required",
    ),
    "retrieve: other's": (
        lambda w: w.outsider_api.get(f"/tasks/{w.queued.pk}"),
        404,
        "not_found",
    ),
    "retrieve: bad id": (lambda w: w.api.get("/tasks/abc"), 400, "invalid"),
    "retrieve: put": (
        lambda w: w.api.put(f"/tasks/{w.queued.pk}", {}, format="json"),
        405,
        "method_not_allowed",
    ),
    "cancel: completed": (
        lambda w: w.api.post(f"/tasks/{w.completed.pk}/cancel"),
        409,
        "conflict",
    ),
    "retry: queued": (lambda w: w.api.post(f"/tasks/{w.queued.pk}/retry"), 409, "conflict"),
    "retry: other's": (
        lambda w: w.outsider_api.post(f"/tasks/{w.failed.pk}/retry"),
        404,
        "not_found",
    ),
    "status: other's": (
        lambda w: w.outsider_api.get(f"/tasks/status/{w.queued.pk}"),
        404,
        "not_found",
    ),
    "completed: failed task": (
        lambda w: w.api.get(f"/tasks/completed/{w.failed.pk}"),
        409,
        "conflict",
    ),
    "types: no token": (lambda w: w.anonymous.get("/tasks/types"), 401, "not_authenticated"),
    # accounts
    "login: missing password": (
        lambda w: w.anonymous.post("/login", {"username": "owner"}, format="json"),
        401,
        "not_authenticated",
    ),
    "login: wrong password": (
        lambda w: w.anonymous.post("/login", {"username": "owner", "password": "x"}, format="json"),
        401,
        "authentication_failed",
    ),
    "login: get": (lambda w: w.anonymous.get("/login"), 405, "method_not_allowed"),
    "refresh: garbled": (
        lambda w: w.anonymous.post("/token/refresh", {"refresh": "x"}, format="json"),
        401,
        "authentication_failed",
    ),
    "refresh: missing": (
        lambda w: w.anonymous.post("/token/refresh", {}, format="json"),
        400,
        "invalid",
    ),
    "logout: garbled": (
        lambda w: w.api.post("/logout", {"refresh": "x"}, format="json"),
        400,
        "invalid",
    ),
    "me: no token": (lambda w: w.anonymous.get("/me"), 401, "not_authenticated"),
    # API keys
    "api key: revoked or unknown": (
        lambda w: APIClient(HTTP_AUTHORIZATION="Api-Key abc.def").get("/tasks"),
        401,
        "authentication_failed",
    ),
    "api keys: create without name": (
        lambda w: w.api.post("/api-keys", {}, format="json"),
        400,
        "invalid",
    ),
    "api keys: create with a key": (
        lambda w: w.key_client.post("/api-keys", {"name": "x"}, format="json"),
        403,
        "permission_denied",
    ),
    "api keys: other's": (
        lambda w: w.outsider_api.delete(f"/api-keys/{w.key.prefix}"),
        404,
        "not_found",
    ),
    # operations and the rest
    "metrics: not staff": (lambda w: w.api.get("/metrics"), 403, "permission_denied"),
    "metrics: anonymous": (lambda w: Client().get("/metrics"), 401, "not_authenticated"),
    "health: no worker": (lambda w: Client().get("/health"), 503, "unavailable"),
    "unknown route": (lambda w: w.api.get("/nope"), 404, "not_found"),
    "bad content-length": (
        lambda w: Client().generic(
            "POST", "/login", b"{}", "application/json", CONTENT_LENGTH="-5"
        ),
        400,
        "invalid",
    ),
    "not acceptable": (
        lambda w: w.api.get("/tasks", HTTP_ACCEPT="text/html"),
        406,
        "not_acceptable",
    ),
}


def test_the_cases_cover_every_code_the_api_answers_with():
    used = {code for _, _, code in CASES.values()}
    # Covered elsewhere: too_large (tests/test_errors), throttled and
    # cap_reached (tests/test_throttling_and_limits, tests/test_api_keys),
    # server_error (tests/test_errors), not_finished (a 202, not an error).
    elsewhere = {"too_large", "throttled", "cap_reached", "server_error", "not_finished"}
    assert used | elsewhere == set(CODES)


@pytest.mark.parametrize("case", list(CASES))
def test_every_error_carries_its_code(case, make_user):
    request, status, code = CASES[case]
    world = World(make_user)

    response = request(world)

    assert response.status_code == status, (case, response.content[:300])
    body = response.json()
    assert body["code"] == code, (case, body)
    assert isinstance(body["error"], str) and body["error"]


def test_a_body_over_the_limit_is_too_large(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10

    response = api.post("/tasks", {"type": "wordcount", "args": {"text": "x" * 50}}, format="json")

    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


def test_a_throttled_request_is_throttled(api, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "task_create": "1/min",
        },
    }
    body = {"type": "wordcount", "args": {"text": "a"}, "delay": 60}
    assert api.post("/tasks", body, format="json").status_code == 202

    response = api.post("/tasks", body, format="json")

    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert response.json()["retry_after"] >= 1


def test_a_not_finished_task_says_so_with_a_code(api, owner):
    task = Task.objects.create(owner=owner, type="wordcount", args={"text": "t"}, timeout=60)

    response = api.get(f"/tasks/completed/{task.pk}")

    assert response.status_code == 202
    assert response.json()["code"] == "not_finished"
