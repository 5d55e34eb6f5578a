"""CORS from CORS_ALLOWED_ORIGINS: preflights answered before authentication,
other origins get no CORS headers."""

import pytest
from django.test import Client

from tasks.models import Task

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"


@pytest.fixture
def allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]


def preflight(origin, path="/tasks", method="POST"):
    return Client().options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
    )


def test_a_preflight_from_an_allowed_origin_needs_no_credentials(allowed):
    response = preflight(APP)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed_headers = response["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {
        h.strip() for h in allowed_headers.split(",")
    }
    assert "Access-Control-Allow-Credentials" not in response
    assert Task.objects.count() == 0


def test_a_preflight_of_an_api_key_route_works_too(allowed):
    response = preflight(APP, "/api-keys/abc", method="DELETE")

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP


def test_an_allowed_origins_requests_and_errors_carry_the_headers(allowed, api):
    ok = api.get("/tasks", HTTP_ORIGIN=APP)
    refused = Client().get("/tasks", HTTP_ORIGIN=APP)

    assert ok.status_code == 200
    assert ok["Access-Control-Allow-Origin"] == APP
    # The browser app can read why it was refused.
    assert refused.status_code == 401
    assert refused["Access-Control-Allow-Origin"] == APP
    assert refused.json()["code"] == "not_authenticated"


def test_the_location_header_is_exposed(allowed, api):
    response = api.post(
        "/tasks",
        {"type": "wordcount", "args": {"text": "a"}, "delay": 60},
        format="json",
        HTTP_ORIGIN=APP,
    )

    assert response.status_code == 202
    assert "location" in response["Access-Control-Expose-Headers"].lower()


def test_another_origin_gets_no_cors_headers(allowed, api):
    response = preflight("https://evil.example.com")
    request = api.get("/tasks", HTTP_ORIGIN="https://evil.example.com")

    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Origin" not in request
    assert request.status_code == 200  # CORS binds browsers, not the server


def test_by_default_no_origin_is_allowed(api):
    assert "Access-Control-Allow-Origin" not in preflight(APP)
    assert "Access-Control-Allow-Origin" not in api.get("/tasks", HTTP_ORIGIN=APP)


def test_a_similar_origin_is_not_allowed(allowed):
    for origin in [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.net",
        "null",
    ]:
        assert "Access-Control-Allow-Origin" not in preflight(origin), origin
