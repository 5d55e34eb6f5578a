"""One JSON error shape for 404, 405, 413, 415, 429 and 500 — never HTML."""

import io
import json

import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.test.client import ClientHandler
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from config.middleware import RequestSizeLimitMiddleware
from tasks.models import Task


def assert_json_error(response, status_code):
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert isinstance(body["error"], str) and body["error"]
    assert b"<html" not in response.content.lower()
    assert b"Traceback" not in response.content
    return body


@pytest.mark.parametrize(
    "path", ["/nope", "/tasks/1/nope", "/api", "/tasks/1/cancel/x", "/ui", "/ui/nope"]
)
def test_unknown_routes_are_json_404(api, path):
    assert_json_error(api.get(path), 404)
    assert_json_error(api.post(path, {}, format="json"), 404)


@override_settings(DEBUG=True)
def test_unknown_routes_stay_json_with_debug_on(api):
    assert_json_error(api.get("/no/such/thing"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/tasks"),
        ("put", "/tasks/1"),
        ("get", "/tasks/1/cancel"),
        ("post", "/tasks/status/1"),
        ("get", "/login"),
        ("patch", "/me"),
    ],
)
def test_wrong_method_is_json_405(api, method, path):
    body = assert_json_error(getattr(api, method)(path), 405)
    assert "not allowed" in body["error"]


def test_non_json_body_is_json_415(api):
    plain = api.post("/tasks", "hello", content_type="text/plain")
    form = api.post("/tasks", {"type": "demo"}, format="multipart")
    urlencoded = api.post("/tasks", "type=demo", content_type="application/x-www-form-urlencoded")

    for response in (plain, form, urlencoded):
        assert "Unsupported media type" in assert_json_error(response, 415)["error"]
    assert Task.objects.count() == 0


def test_body_over_the_limit_is_json_413_naming_it(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(
        "/tasks", {"type": "wordcount", "args": {"text": "x" * 2000}}, format="json"
    )

    body = assert_json_error(response, 413)
    assert "1000 bytes" in body["error"]
    assert "MAX_REQUEST_BYTES" in body["error"]
    assert Task.objects.count() == 0


def test_413_comes_before_authentication(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    assert_json_error(APIClient().post("/login", {"username": "x" * 100}, format="json"), 413)


def _chunked_environ(body: bytes, **extra):
    """A chunked request as gunicorn passes it on: decoded, and marked so."""
    return RequestFactory()._base_environ(
        PATH_INFO="/tasks",
        REQUEST_METHOD="POST",
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
        **extra,
    )


def test_a_body_without_content_length_is_read_bounded(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    middleware = RequestSizeLimitMiddleware(lambda request: HttpResponse(request.body))

    small = middleware(WSGIRequest(_chunked_environ(b'{"a": 1}')))
    big = middleware(WSGIRequest(_chunked_environ(b"x" * 101)))

    assert small.status_code == 200
    assert small.content == b'{"a": 1}'
    assert_json_error(big, 413)


def test_a_chunked_task_submission_is_neither_lost_nor_unbounded(owner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    token = RefreshToken.for_user(owner).access_token
    handler = ClientHandler(enforce_csrf_checks=False)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    body = b'{"type": "wordcount", "args": {"text": "chunked"}, "delay": 60}'
    accepted = handler(_chunked_environ(body, **auth))
    refused = handler(_chunked_environ(b'{"type": "' + b"x" * 300 + b'"}', **auth))

    assert accepted.status_code == 202, accepted.content
    task = Task.objects.get()
    assert (task.type, task.args) == ("wordcount", {"text": "chunked", "top": 10})
    assert_json_error(refused, 413)
    assert Task.objects.count() == 1


def test_a_negative_content_length_is_refused(api):
    response = api.generic(
        "POST", "/tasks", b"{}", content_type="application/json", CONTENT_LENGTH="-5"
    )
    assert_json_error(response, 400)


def test_an_unexpected_exception_in_an_api_view_is_json_500(api, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("tasks.selectors.task_of", explode)
    response = api.get("/tasks/1")

    body = assert_json_error(response, 500)
    assert body == {"error": "Internal server error.", "code": "server_error"}
    assert b"secret internal detail" not in response.content


@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_a_database_out_of_reach_is_a_503_to_retry(api, owner, monkeypatch, error):
    def unreachable(**kwargs):
        raise error("terminating connection due to administrator command")

    monkeypatch.setattr("tasks.services.submit_task", unreachable)
    monkeypatch.setattr("tasks.selectors.task_of", unreachable)
    for response in (api.post("/tasks", {}, format="json"), api.get("/tasks/1")):
        body = assert_json_error(response, 503)
        assert body["code"] == "unavailable" and body["retry_after"] == 1
        assert response["Retry-After"] == "1"
        assert b"administrator" not in response.content


@override_settings(ROOT_URLCONF="tests.error_urls")
def test_an_unexpected_exception_outside_the_api_is_json_500(db):
    response = Client(raise_request_exception=False).get("/crash")

    assert assert_json_error(response, 500) == {
        "error": "Internal server error.",
        "code": "server_error",
    }
    assert b"secret internal detail" not in response.content


def test_field_errors_are_under_fields(api):
    response = api.post("/tasks", {"type": "primes", "args": {"limit": "many"}}, format="json")

    body = assert_json_error(response, 400)
    assert body["fields"] == {"args": {"limit": ["A valid integer is required."]}}
    assert Task.objects.count() == 0
