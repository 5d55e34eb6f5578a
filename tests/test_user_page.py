"""The page for users at `/`, its session login, and the session cookie on the API."""

import json
import re

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.staticfiles import finders
from django.test import Client
from rest_framework.test import APIClient

from tasks.models import Task

from . import tasks_in_states
from .conftest import PASSWORD, client_for
from .test_throttling_and_limits import assert_throttled, rates

pytestmark = pytest.mark.django_db

TEMPLATE = settings.BASE_DIR / "web" / "templates" / "web" / "page.html"
SCRIPT = settings.BASE_DIR / "web" / "static" / "web" / "page.js"


def browser(ip="10.1.0.1") -> Client:
    """A client that, like a browser, only passes CSRF checks with the token."""
    return Client(enforce_csrf_checks=True, REMOTE_ADDR=ip)


def csrf_token(client: Client) -> str:
    """The token the page gives its script (the page also sets the cookie)."""
    page = client.get("/").content.decode()
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match, page
    return match.group(1)


def post_json(client: Client, path: str, body=None, token: str | None = None, **extra):
    headers = {"HTTP_X_CSRFTOKEN": token} if token else {}
    data = json.dumps(body) if body is not None else ""
    return client.post(path, data, content_type="application/json", **headers, **extra)


def logged_in(user, ip="10.1.0.1") -> tuple[Client, str]:
    client = browser(ip)
    response = post_json(
        client, "/ui/login", {"username": user.username, "password": PASSWORD}, csrf_token(client)
    )
    assert response.status_code == 200, response.content
    # The login rotates the token: the page is read again, as the script reloads it.
    return client, csrf_token(client)


def assert_error(response, status_code, code):
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["error"]
    return body


# --- The page -------------------------------------------------------------------


def test_the_page_offers_a_login_form_to_visitors():
    response = Client().get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert 'id="login-form"' in page and 'id="app"' not in page
    assert "csrftoken" in response.cookies
    assert "no-store" in response["Cache-Control"]
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert 'src="/static/web/page.js"' in page
    assert 'href="/static/web/page.css"' in page


def test_the_page_shows_the_app_to_a_logged_in_user(owner):
    client = Client()
    client.force_login(owner)
    page = client.get("/").content.decode()

    assert 'id="app"' in page and 'id="login-form"' not in page
    assert '<strong id="whoami">owner</strong>' in page


def test_the_page_runs_no_inline_code_and_never_parses_server_text_as_html():
    template = TEMPLATE.read_text()
    script = SCRIPT.read_text()

    # Only the one external script; no inline handlers (the CSP would block them).
    assert re.findall(r"<script[^>]*>", template) == [
        "<script src=\"{% static 'web/page.js' %}\" defer>"
    ]
    assert not re.search(r"\son[a-z]+\s*=", template)
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script and "eval(" not in script


def test_its_script_and_stylesheet_are_served():
    assert finders.find("web/page.js") and finders.find("web/page.css")


def test_other_methods_on_the_page_are_a_json_405():
    for method in ("post", "put", "delete"):
        response = getattr(browser(), method)("/")
        assert_error(response, 405, "method_not_allowed")


# --- Logging in and out ----------------------------------------------------------


def test_a_login_sets_a_session_the_api_accepts(owner):
    client = browser()
    response = post_json(
        client, "/ui/login", {"username": "owner", "password": PASSWORD}, csrf_token(client)
    )

    assert response.status_code == 200
    assert response.json() == {"username": "owner"}
    assert "no-store" in response["Cache-Control"]
    assert client.session[SESSION_KEY] == str(owner.pk)
    mine = tasks_in_states.queued(owner)
    listed = client.get("/tasks")
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()["results"]] == [mine.pk]


def test_a_login_without_the_csrf_token_is_refused(owner):
    client = browser()
    csrf_token(client)  # the cookie alone is not enough
    response = post_json(client, "/ui/login", {"username": "owner", "password": PASSWORD})

    body = assert_error(response, 403, "permission_denied")
    assert "CSRF" in body["error"]
    assert SESSION_KEY not in client.session
    assert_error(client.get("/tasks"), 401, "not_authenticated")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "owner", "password": "wrong"}, "authentication_failed"),
        ({"username": "nobody", "password": PASSWORD}, "authentication_failed"),
        ({"username": "owner"}, "not_authenticated"),
        ({"username": ["owner"], "password": PASSWORD}, "not_authenticated"),
        ({"username": "owner", "password": 123}, "not_authenticated"),
        ({}, "not_authenticated"),
        ([1, 2], "not_authenticated"),
    ],
)
def test_bad_logins_are_401s(owner, body, code):
    client = browser()
    response = post_json(client, "/ui/login", body, csrf_token(client))

    assert_error(response, 401, code)
    assert SESSION_KEY not in client.session


def test_an_inactive_user_cannot_log_in(make_user):
    make_user("gone", is_active=False)
    client = browser()
    response = post_json(
        client, "/ui/login", {"username": "gone", "password": PASSWORD}, csrf_token(client)
    )
    assert_error(response, 401, "authentication_failed")


def test_bad_bodies_are_json_errors(owner):
    client = browser()
    token = csrf_token(client)
    headers = {"HTTP_X_CSRFTOKEN": token}

    broken = client.post("/ui/login", "{nope", content_type="application/json", **headers)
    assert_error(broken, 400, "parse_error")
    form = client.post("/ui/login", {"username": "owner", "password": PASSWORD}, **headers)
    assert_error(form, 415, "unsupported_media_type")
    huge = json.dumps({"username": "owner", "password": "x" * (2 * 1024 * 1024)})
    too_large = client.post("/ui/login", huge, content_type="application/json", **headers)
    assert_error(too_large, 413, "too_large")
    assert_error(client.get("/ui/login"), 405, "method_not_allowed")
    assert SESSION_KEY not in client.session


@rates(login_username="3/min", login_ip="1000/min")
def test_logins_are_throttled_on_the_counters_of_login(owner):
    # Two wrong passwords through the API, one through the page...
    for _ in range(2):
        api = APIClient().post("/login", {"username": "owner", "password": "x"}, format="json")
        assert api.status_code == 401
    client = browser("10.1.0.2")
    token = csrf_token(client)
    wrong = post_json(client, "/ui/login", {"username": "owner", "password": "x"}, token)
    assert wrong.status_code == 401

    # ...and even the right one is refused on either door.
    right = post_json(client, "/ui/login", {"username": "owner", "password": PASSWORD}, token)
    assert_throttled(right)
    assert right.json()["code"] == "throttled"
    assert SESSION_KEY not in client.session
    api = APIClient().post("/login", {"username": "owner", "password": PASSWORD}, format="json")
    assert api.status_code == 429


@rates(login_username="1000/min", login_ip="2/min")
def test_logins_are_throttled_per_client_address(owner):
    client = browser("10.1.0.3")
    token = csrf_token(client)
    for name in ("a", "b"):
        response = post_json(client, "/ui/login", {"username": name, "password": "x"}, token)
        assert response.status_code == 401
    right = post_json(client, "/ui/login", {"username": "owner", "password": PASSWORD}, token)
    assert_throttled(right)

    elsewhere = browser("10.1.0.4")
    response = post_json(
        elsewhere, "/ui/login", {"username": "owner", "password": PASSWORD}, csrf_token(elsewhere)
    )
    assert response.status_code == 200


def test_logout_ends_the_session(owner):
    client, token = logged_in(owner)

    response = post_json(client, "/ui/logout", token=token)

    assert response.status_code == 200
    assert response.json() == {"message": "Logged out"}
    assert SESSION_KEY not in client.session
    assert_error(client.get("/tasks"), 401, "not_authenticated")
    assert 'id="login-form"' in client.get("/").content.decode()


def test_logout_needs_the_csrf_token(owner):
    client, _ = logged_in(owner)

    assert_error(post_json(client, "/ui/logout"), 403, "permission_denied")
    assert client.session[SESSION_KEY] == str(owner.pk)
    assert client.get("/tasks").status_code == 200


def test_logout_without_a_session_is_harmless():
    client = browser()
    assert post_json(client, "/ui/logout", token=csrf_token(client)).status_code == 200


# --- The API with the session cookie ---------------------------------------------


def test_a_session_post_needs_the_csrf_token(owner):
    client, token = logged_in(owner)
    body = {"type": "wordcount", "args": {"text": "a b"}}

    refused = post_json(client, "/tasks", body)
    assert_error(refused, 403, "permission_denied")
    assert "CSRF" in refused.json()["error"]
    assert not Task.objects.exists()

    started = post_json(client, "/tasks", body, token)
    assert started.status_code == 202, started.content
    task = Task.objects.get(pk=started.json()["task_id"])
    assert (task.owner, task.type, task.args["text"]) == (owner, "wordcount", "a b")


def test_a_session_cancel_and_retry_need_the_csrf_token(owner):
    client, token = logged_in(owner)
    task = tasks_in_states.queued(owner)

    assert_error(post_json(client, f"/tasks/{task.pk}/cancel"), 403, "permission_denied")
    task.refresh_from_db()
    assert task.status == "queued"
    cancelled = post_json(client, f"/tasks/{task.pk}/cancel", token=token)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_error(post_json(client, f"/tasks/{task.pk}/retry"), 403, "permission_denied")
    retried = post_json(client, f"/tasks/{task.pk}/retry", token=token)
    assert retried.status_code == 202 and retried.json()["status"] == "queued"


def test_a_session_sees_only_its_own_tasks(owner, outsider):
    client, token = logged_in(owner)
    theirs = tasks_in_states.queued(outsider)

    assert_error(client.get(f"/tasks/{theirs.pk}"), 404, "not_found")
    assert_error(post_json(client, f"/tasks/{theirs.pk}/cancel", token=token), 404, "not_found")
    assert_error(client.get(f"/tasks/{theirs.pk}/logs"), 404, "not_found")
    assert_error(client.get("/tasks/999999999"), 404, "not_found")
    assert_error(client.get("/tasks/abc"), 400, "invalid")
    assert client.get("/tasks").json()["results"] == []


def test_a_session_post_with_a_bad_body_is_a_json_error(owner):
    client, token = logged_in(owner)
    headers = {"HTTP_X_CSRFTOKEN": token}

    broken = client.post("/tasks", "{", content_type="application/json", **headers)
    assert_error(broken, 400, "parse_error")
    typed = post_json(client, "/tasks", {"type": "primes", "args": {"limit": "lots"}}, token)
    body = assert_error(typed, 400, "invalid")
    assert "limit" in body["fields"]["args"]


# --- API clients see no difference ----------------------------------------------


def test_no_credentials_is_still_a_401_asking_for_a_bearer_token():
    response = APIClient().get("/tasks")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_token_needs_no_csrf_token_and_wins_over_a_session(owner, outsider):
    # A browser session of one user and a Bearer token of another: the token
    # decides, and token requests are not subject to CSRF.
    client, _ = logged_in(outsider)
    token = client_for(owner)._credentials["HTTP_AUTHORIZATION"]

    response = post_json(
        client, "/tasks", {"type": "wordcount", "args": {"text": "x"}}, HTTP_AUTHORIZATION=token
    )

    assert response.status_code == 202, response.content
    assert Task.objects.get(pk=response.json()["task_id"]).owner == owner


def test_a_bad_token_is_refused_even_with_a_session(owner):
    client, _ = logged_in(owner)
    response = client.get("/tasks", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert_error(response, 401, "authentication_failed")


def test_the_seed_login_still_answers_with_tokens(owner):
    response = APIClient().post(
        "/login", {"username": "owner", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert {"Token", "access", "refresh"} <= set(response.json())
    assert "sessionid" not in response.cookies


def test_an_inactive_users_session_is_refused(owner):
    client, _ = logged_in(owner)
    get_user_model().objects.filter(pk=owner.pk).update(is_active=False)
    assert_error(client.get("/tasks"), 401, "not_authenticated")
