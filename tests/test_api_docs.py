"""The OpenAPI schema is valid and complete; the docs work with no internet."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[1]

ENDPOINTS = {
    ("/login", "post"),
    ("/token/refresh", "post"),
    ("/logout", "post"),
    ("/me", "get"),
    ("/tasks", "get"),
    ("/tasks", "post"),
    ("/tasks/types", "get"),
    ("/tasks/{id}", "get"),
    ("/tasks/{id}/cancel", "post"),
    ("/tasks/{id}/retry", "post"),
    ("/tasks/status/{id}", "get"),
    ("/tasks/completed/{id}", "get"),
    ("/ui/login", "post"),
    ("/ui/logout", "post"),
}


def test_the_schema_validates_without_warnings():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            os.devnull,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr


@pytest.fixture
def schema(db):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_every_endpoint_is_documented_with_its_errors(schema):
    operations = {
        (path, method): op
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert ENDPOINTS <= set(operations)
    assert "/api/schema" not in schema["paths"]
    for (path, method), op in operations.items():
        responses = op["responses"]
        errors = [code for code in responses if code.startswith(("4", "5"))]
        assert "500" in errors, (path, method)
        for code in errors:
            content = responses[code]["content"]["application/json"]["schema"]
            assert "$ref" in content, (path, method, code)
        if path == "/metrics":
            assert {"metricsToken": []} in op["security"], (path, method)
            assert {"jwtAuth": []} in op["security"], (path, method)
            assert {"apiKey": []} in op["security"], (path, method)
        elif path == "/health":
            assert op.get("security", [{}]) == [{}], "health is public"
            assert "503" in responses
        elif path in ("/ui/login", "/ui/logout"):
            # The page's session login: no credentials, the CSRF token instead.
            assert op.get("security", [{}]) == [{}], (path, method)
            assert "403" in responses, (path, method)
        elif path not in ("/login", "/token/refresh"):
            # The session cookie too: the page at / (and EventSource) use it.
            assert op["security"] == [{"jwtAuth": []}, {"apiKey": []}, {"cookieAuth": []}], (
                path,
                method,
            )
            assert "401" in responses, (path, method)
        if method == "post":
            assert {"400", "413", "415"} <= set(responses), (path, method)
        if "{id}" in path:
            assert "404" in responses and "400" in responses, (path, method)
            (param,) = [p for p in op["parameters"] if p["in"] == "path"]
            assert param["schema"]["type"] == "integer"


def test_the_seed_routes_are_documented_with_their_bodies(schema):
    components = schema["components"]["schemas"]
    login = schema["paths"]["/login"]["post"]
    completed = schema["paths"]["/tasks/completed/{id}"]["get"]["responses"]
    created = schema["paths"]["/tasks"]["post"]["responses"]

    assert "Token" in components["Tokens"]["properties"]
    assert "429" in login["responses"]
    assert {"200", "202", "404", "409"} <= set(completed)
    assert "Task" in components["TaskCompleted"]["properties"]
    assert {"task_id", "message"} <= set(components["TaskStarted"]["properties"])
    assert {"202", "409", "429"} <= set(created)
    assert components["Error"]["required"] == ["error", "code"]


def test_the_list_documents_its_filters(schema):
    names = {p["name"] for p in schema["paths"]["/tasks"]["get"]["parameters"]}
    wanted = {"status", "type", "created_after", "created_before", "ordering", "all", "cursor"}
    assert wanted <= names
    wait = [p for p in schema["paths"]["/tasks/{id}"]["get"]["parameters"] if p["name"] == "wait"]
    assert wait[0]["schema"]["maximum"] == 30


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_docs_pages_load_their_assets_locally(db, path):
    client = APIClient()
    page = client.get(path)

    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/static/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert b"".join(served.streaming_content if served.streaming else [served.content])
    assert not re.findall(r"(?:https?:)?//[a-z]", html), (
        "the page loads something from the internet"
    )
    assert "/api/schema" in html


@pytest.mark.parametrize(
    ("method", "query", "status"), [("post", "", 405), ("get", "?format=bogus", 404)]
)
def test_the_schema_endpoints_errors_are_json_too(db, method, query, status):
    response = getattr(APIClient(), method)(f"/api/schema/{query}")

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error", "code"}
