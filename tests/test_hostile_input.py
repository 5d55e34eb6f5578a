"""Malformed and hostile requests, tried as an attacker would.

Every one must get a 4xx answer with the JSON error shape — never a 5xx, never
HTML — and must leave the database exactly as it was.
"""

import base64
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from config.errors import CODES
from tasks.models import Status, Task, TaskAttempt

from .conftest import PASSWORD, client_for


class World:
    """Two users, their tasks and clients; what every case runs against."""

    def __init__(self, make_user):
        self.owner = make_user("owner")
        self.outsider = make_user("outsider")
        self.api = client_for(self.owner)
        self.outsider_api = client_for(self.outsider)
        self.anonymous = APIClient()
        self.queued = self._task(Status.QUEUED)
        self.failed = self._task(Status.FAILED, error={"message": "x"})
        self.completed = self._task(Status.COMPLETED, output={"ok": True})
        self.expired = expired_token(self.owner)
        self.refresh = str(RefreshToken.for_user(self.owner))
        self.access = str(AccessToken.for_user(self.owner))
        self.deactivated = user_token_then(make_user("gone-quiet"), "deactivate")
        self.deleted = user_token_then(make_user("gone"), "delete")

    def _task(self, status, **extra):
        return Task.objects.create(
            owner=self.owner,
            type="wordcount",
            args={"text": "t"},
            status=status,
            timeout=60,
            **extra,
        )

    def bearer(self, token) -> APIClient:
        return APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")

    def raw(self, client, method, path, body, content_type="application/json"):
        return client.generic(method, path, body, content_type=content_type)

    def snapshot(self):
        tasks = list(
            Task.objects.order_by("pk").values_list(
                "pk", "status", "args", "cancel_requested", "attempts", "updated_at"
            )
        )
        return (
            tasks,
            TaskAttempt.objects.count(),
            list(get_user_model().objects.order_by("pk").values_list("pk", "is_active")),
            OutstandingToken.objects.count(),
            BlacklistedToken.objects.count(),
        )


def token_claims(user, **overrides):
    now = int(time.time())
    claims = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": str(user.pk),
    }
    return {**claims, **overrides}


def expired_token(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=5))
    return str(token)


def user_token_then(user, what):
    """A valid token of `user`, who is then deactivated or deleted."""
    token = str(AccessToken.for_user(user))
    if what == "delete":
        user.delete()
    else:
        user.is_active = False
        user.save()
    return token


def cursor(query: str) -> str:
    """A cursor as DRF encodes them: base64 of a query string."""
    return base64.b64encode(query.encode()).decode()


def deep(n):
    return "[" * n + "]" * n


POST_TASKS = "/tasks"
CASES = {
    # --- ids -----------------------------------------------------------------
    "id abc": lambda w: w.api.get("/tasks/abc"),
    "id -1": lambda w: w.api.get("/tasks/-1"),
    "id 0": lambda w: w.api.get("/tasks/status/0"),
    "id 1.5": lambda w: w.api.get("/tasks/completed/1.5"),
    "id %00": lambda w: w.api.get("/tasks/%00"),
    "id 30 digits": lambda w: w.api.get("/tasks/" + "9" * 30),
    "id 30 digits cancel": lambda w: w.api.post(f"/tasks/{'9' * 30}/cancel"),
    "id non-ascii digits": lambda w: w.api.get("/tasks/%D9%A1"),
    "id with spaces": lambda w: w.api.post("/tasks/%201%20/retry"),
    # --- bodies ----------------------------------------------------------------
    "invalid json": lambda w: w.raw(w.api, "POST", POST_TASKS, '{"type": '),
    "json array": lambda w: w.raw(w.api, "POST", POST_TASKS, "[]"),
    "json null": lambda w: w.raw(w.api, "POST", POST_TASKS, "null"),
    "json string": lambda w: w.raw(w.api, "POST", POST_TASKS, '"demo"'),
    "bare NaN": lambda w: w.raw(w.api, "POST", POST_TASKS, "NaN"),
    "NaN in args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "demo", "args": {"seconds": NaN}}'
    ),
    "Infinity priority": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "demo", "priority": Infinity}'
    ),
    "overflowing number": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "demo", "args": {"seconds": 1e999}}'
    ),
    "10000 digit number": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "primes", "args": {"limit": ' + "9" * 10000 + "}}"
    ),
    "10,000-deep nesting": lambda w: w.raw(w.api, "POST", POST_TASKS, deep(10_000)),
    "deep nesting in args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "demo", "args": ' + deep(200) + "}"
    ),
    "deep nesting at login": lambda w: w.raw(w.anonymous, "POST", "/login", deep(10_000)),
    "invalid utf-8": lambda w: w.raw(w.api, "POST", POST_TASKS, b'{"type": "\xff\xfe"}'),
    "text/plain body": lambda w: w.raw(w.api, "POST", POST_TASKS, "demo", "text/plain"),
    "form body": lambda w: w.api.post(POST_TASKS, {"type": "demo"}, format="multipart"),
    "form login": lambda w: w.anonymous.post(
        "/login", {"username": "owner", "password": PASSWORD}, format="multipart"
    ),
    "10 MB body": lambda w: w.raw(
        w.api,
        "POST",
        POST_TASKS,
        '{"type": "wordcount", "args": {"text": "' + "x" * 10_000_000 + '"}}',
    ),
    "json login null": lambda w: w.raw(w.anonymous, "POST", "/login", "null"),
    # --- types and args --------------------------------------------------------
    "unknown type": lambda w: w.api.post(POST_TASKS, {"type": "nope"}, format="json"),
    "dotted type os.system": lambda w: w.api.post(
        POST_TASKS, {"type": "os.system", "args": {"command": "touch /tmp/pwned"}}, format="json"
    ),
    "dotted type of our own code": lambda w: w.api.post(
        POST_TASKS, {"type": "tasks.worker.run_task", "args": {}}, format="json"
    ),
    "type is an object": lambda w: w.api.post(
        POST_TASKS, {"type": {"name": "demo"}}, format="json"
    ),
    "args of the wrong type": lambda w: w.api.post(
        POST_TASKS, {"type": "primes", "args": {"limit": "many"}}, format="json"
    ),
    "args is a list": lambda w: w.api.post(
        POST_TASKS, {"type": "primes", "args": [1, 2]}, format="json"
    ),
    "args is null": lambda w: w.api.post(
        POST_TASKS, {"type": "primes", "args": None}, format="json"
    ),
    "extra arg key": lambda w: w.api.post(
        POST_TASKS, {"type": "primes", "args": {"limit": 10, "shell": "rm -rf /"}}, format="json"
    ),
    "extra top-level key": lambda w: w.api.post(
        POST_TASKS, {"type": "demo", "owner": 2, "status": "completed"}, format="json"
    ),
    "NUL byte in args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "wordcount", "args": {"text": "a\\u0000b"}}'
    ),
    "NUL byte in a key": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "wordcount", "args": {"te\\u0000xt": "a"}}'
    ),
    "NUL byte in login": lambda w: w.raw(
        w.anonymous, "POST", "/login", '{"username": "owner\\u0000", "password": "x"}'
    ),
    "lone surrogate": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "wordcount", "args": {"text": "\\ud800"}}'
    ),
    # Free-form JSON args reach the database as they are: the parser must stop these.
    "NUL byte in free-form args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "test.echo", "args": {"payload": "a\\u0000"}}'
    ),
    "NUL byte in a free-form key": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "test.echo", "args": {"payload": {"\\u0000": 1}}}'
    ),
    "lone surrogate in free-form args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "test.echo", "args": {"payload": ["\\udfff"]}}'
    ),
    "overflowing number in free-form args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "test.echo", "args": {"payload": -1e400}}'
    ),
    "deep nesting in free-form args": lambda w: w.raw(
        w.api, "POST", POST_TASKS, '{"type": "test.echo", "args": {"payload": ' + deep(50) + "}}"
    ),
    "negative timeout": lambda w: w.api.post(
        POST_TASKS, {"type": "demo", "timeout": -1}, format="json"
    ),
    "huge timeout": lambda w: w.api.post(
        POST_TASKS, {"type": "demo", "timeout": 10**30}, format="json"
    ),
    "run_at and delay": lambda w: w.api.post(
        POST_TASKS, {"type": "demo", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, format="json"
    ),
    "overlong idempotency key": lambda w: w.api.post(
        POST_TASKS, {"type": "demo"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 300
    ),
    "non-ascii idempotency key": lambda w: w.api.post(
        POST_TASKS, {"type": "demo"}, format="json", HTTP_IDEMPOTENCY_KEY="clé"
    ),
    # --- query strings -----------------------------------------------------------
    "NUL in a filter": lambda w: w.api.get("/tasks?type=%00"),
    "unknown status filter": lambda w: w.api.get("/tasks?status=done"),
    "bad date filter": lambda w: w.api.get("/tasks?created_after=%00"),
    "date filter overflowing UTC": lambda w: w.api.get(
        "/tasks", {"created_before": "9999-12-31T23:59:59-12:00"}
    ),
    "date filter underflowing UTC": lambda w: w.api.get(
        "/tasks", {"created_after": "0001-01-01T00:00:00+12:00"}
    ),
    "garbled cursor": lambda w: w.api.get("/tasks?cursor=%00%ff"),
    "forged cursor, not a number": lambda w: w.api.get("/tasks", {"cursor": cursor("p=abc")}),
    "forged cursor, NUL": lambda w: w.api.get("/tasks", {"cursor": cursor("p=%00")}),
    "forged cursor, huge id": lambda w: w.api.get("/tasks", {"cursor": cursor("p=" + "9" * 30)}),
    "forged cursor, not a time": lambda w: w.api.get(
        "/tasks", {"cursor": cursor("p=-1&r=1"), "ordering": "created_at"}
    ),
    "wait too long": lambda w: w.api.get(f"/tasks/{w.queued.pk}?wait=100000"),
    # --- tokens --------------------------------------------------------------------
    "no token": lambda w: w.anonymous.post(POST_TASKS, {}, format="json"),
    "no token list": lambda w: w.anonymous.get("/tasks"),
    "garbled token": lambda w: w.bearer("abc.def.ghi").post(POST_TASKS, {}, format="json"),
    "wrong scheme": lambda w: APIClient(HTTP_AUTHORIZATION="Basic b3duZXI6eA==").get("/me"),
    "empty bearer": lambda w: APIClient(HTTP_AUTHORIZATION="Bearer ").get("/tasks"),
    "expired token": lambda w: w.bearer(w.expired).post(POST_TASKS, {}, format="json"),
    "alg=none token": lambda w: w.bearer(
        jwt.encode(token_claims(w.owner), key=None, algorithm="none")
    ).post(POST_TASKS, {}, format="json"),
    "token signed with another key": lambda w: w.bearer(
        jwt.encode(token_claims(w.owner), "not-our-key-" + "x" * 40, algorithm="HS256")
    ).post(POST_TASKS, {}, format="json"),
    "token claiming another user": lambda w: w.bearer(
        jwt.encode(token_claims(w.outsider), "guessed-" + "y" * 40, algorithm="HS256")
    ).get(f"/tasks/{w.queued.pk}"),
    "refresh token used as access": lambda w: w.bearer(w.refresh).post(
        POST_TASKS, {}, format="json"
    ),
    "deactivated user's token": lambda w: w.bearer(w.deactivated).post(
        POST_TASKS, {}, format="json"
    ),
    "deleted user's token": lambda w: w.bearer(w.deleted).get("/tasks"),
    "access token used to refresh": lambda w: w.anonymous.post(
        "/token/refresh", {"refresh": w.access}, format="json"
    ),
    "garbled refresh token": lambda w: w.anonymous.post(
        "/token/refresh", {"refresh": "x" * 5000}, format="json"
    ),
    "logout with an access token": lambda w: w.api.post(
        "/logout", {"refresh": w.access}, format="json"
    ),
    # --- another user's task, every verb ---------------------------------------------
    "other's task: retrieve": lambda w: w.outsider_api.get(f"/tasks/{w.queued.pk}"),
    "other's task: wait": lambda w: w.outsider_api.get(f"/tasks/{w.queued.pk}?wait=5"),
    "other's task: status": lambda w: w.outsider_api.get(f"/tasks/status/{w.queued.pk}"),
    "other's task: output": lambda w: w.outsider_api.get(f"/tasks/completed/{w.completed.pk}"),
    "other's task: cancel": lambda w: w.outsider_api.post(f"/tasks/{w.queued.pk}/cancel"),
    "other's task: retry": lambda w: w.outsider_api.post(f"/tasks/{w.failed.pk}/retry"),
    "other's task: delete": lambda w: w.outsider_api.delete(f"/tasks/{w.queued.pk}"),
    "other's task: put": lambda w: w.outsider_api.put(
        f"/tasks/{w.queued.pk}", {"status": "completed"}, format="json"
    ),
    "everyone's tasks as non-staff": lambda w: w.outsider_api.get("/tasks?all=true"),
    # --- state conflicts ------------------------------------------------------------
    "cancel a completed task": lambda w: w.api.post(f"/tasks/{w.completed.pk}/cancel"),
    "retry a queued task": lambda w: w.api.post(f"/tasks/{w.queued.pk}/retry"),
}


def test_there_are_at_least_thirty_hostile_requests():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_request_gets_a_json_4xx_and_changes_nothing(case, make_user, run_jobs):
    world = World(make_user)
    before = world.snapshot()

    # run_jobs: anything wrongly queued would run (and change rows) right here.
    response = run_jobs(CASES[case], world)

    assert 400 <= response.status_code < 500, (case, response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), case
    body = json.loads(response.content)
    assert isinstance(body["error"], str) and body["error"], (case, body)
    assert body["code"] in CODES, (case, body)
    assert b"Traceback" not in response.content, case
    assert world.snapshot() == before, case


def test_free_form_args_that_are_storable_are_accepted(api, run_jobs):
    # The guard above refuses only what cannot be stored, not ordinary JSON.
    payload = {"text": "caf\u00e9 \U0001f600", "n": [1, 2.5, None, True], "deep": [[[[1]]]]}

    response = run_jobs(
        api.post, "/tasks", {"type": "test.echo", "args": {"payload": payload}}, format="json"
    )

    assert response.status_code == 202
    task = Task.objects.get(pk=response.json()["task_id"])
    assert task.status == Status.COMPLETED
    assert task.output == {"payload": payload}
