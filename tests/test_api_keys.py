"""API keys: created once, stored hashed, used as `Authorization: Api-Key <key>`,
listed, revoked through the API and the admin."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.models import APIKey
from tasks.models import Task

from .conftest import client_for

pytestmark = pytest.mark.django_db


def key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def assert_401(response):
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["error"] and body["code"] in ("authentication_failed", "not_authenticated")
    return body


def test_creating_a_key_shows_it_once_and_stores_only_a_hash(api, owner):
    response = api.post(
        "/api-keys", {"name": "nightly", "expires_at": "2099-01-01T00:00:00Z"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    key = body["key"]
    assert key.startswith(body["prefix"] + ".") and len(key) > 30
    assert response["Location"] == f"/api-keys/{body['prefix']}"
    assert body["name"] == "nightly"
    assert body["expires_at"] == "2099-01-01T00:00:00Z"
    assert body["revoked"] is False and body["last_used_at"] is None
    row = APIKey.objects.get(prefix=body["prefix"])
    assert row.user == owner
    # Neither the key nor its secret part is in the row.
    secret = key.partition(".")[2]
    stored = json.dumps([row.pk, row.prefix, row.hashed_key, row.name])
    assert secret not in stored
    assert row.hashed_key.startswith("sha512$$")

    listed = api.get("/api-keys").json()["results"]
    assert [k["prefix"] for k in listed] == [body["prefix"]]
    assert "key" not in listed[0]
    assert "key" not in api.get(f"/api-keys/{body['prefix']}").json()


def test_a_key_acts_as_its_owner_on_task_endpoints(api, owner, run_jobs):
    key = api.post("/api-keys", {"name": "ci"}, format="json").json()["key"]
    program = key_client(key)

    created = run_jobs(
        program.post, "/tasks", {"type": "primes", "args": {"limit": 100}}, format="json"
    )
    assert created.status_code == 202, created.content
    task = Task.objects.get(pk=created.json()["task_id"])
    assert task.owner == owner
    assert (
        program.get(f"/tasks/{task.pk}").json()["output"]
        == api.get(f"/tasks/{task.pk}").json()["output"]
    )
    assert program.get(f"/tasks/status/{task.pk}").json()["status"] == "completed"
    assert [t["id"] for t in program.get("/tasks").json()["results"]] == [task.pk]
    assert program.get("/tasks/types").status_code == 200
    assert program.get("/me").json()["username"] == owner.username
    assert program.post(f"/tasks/{task.pk}/cancel").status_code == 409


def test_a_key_records_when_it_was_last_used(api):
    body = api.post("/api-keys", {"name": "ci"}, format="json").json()

    key_client(body["key"]).get("/me")

    used = APIKey.objects.get(prefix=body["prefix"]).last_used_at
    assert used is not None and timezone.now() - used < timedelta(minutes=1)
    assert api.get(f"/api-keys/{body['prefix']}").json()["last_used_at"] is not None


def test_a_key_never_sees_another_users_tasks(api, outsider_api, run_jobs):
    key = api.post("/api-keys", {"name": "ci"}, format="json").json()["key"]
    theirs = run_jobs(
        outsider_api.post, "/tasks", {"type": "primes", "args": {"limit": 10}}, format="json"
    ).json()["task_id"]

    program = key_client(key)

    assert program.get(f"/tasks/{theirs}").status_code == 404
    assert program.post(f"/tasks/{theirs}/cancel").status_code == 404
    assert program.get("/tasks").json()["results"] == []


def test_a_revoked_key_is_refused(api):
    body = api.post("/api-keys", {"name": "ci"}, format="json").json()
    program = key_client(body["key"])
    assert program.get("/tasks").status_code == 200

    response = api.delete(f"/api-keys/{body['prefix']}")

    assert response.status_code == 204
    assert APIKey.objects.get(prefix=body["prefix"]).revoked is True
    assert_401(program.get("/tasks"))
    assert api.get(f"/api-keys/{body['prefix']}").json()["revoked"] is True
    # Revoking again changes nothing.
    assert api.delete(f"/api-keys/{body['prefix']}").status_code == 204


def test_an_expired_key_is_refused(api):
    body = api.post(
        "/api-keys",
        {"name": "soon", "expires_at": (timezone.now() + timedelta(hours=1)).isoformat()},
        format="json",
    ).json()
    program = key_client(body["key"])
    assert program.get("/tasks").status_code == 200

    APIKey.objects.filter(prefix=body["prefix"]).update(
        expiry_date=timezone.now() - timedelta(seconds=1)
    )

    assert_401(program.get("/tasks"))


def test_an_inactive_users_key_is_refused(api, owner):
    key = api.post("/api-keys", {"name": "ci"}, format="json").json()["key"]
    owner.is_active = False
    owner.save()

    body = assert_401(key_client(key).get("/tasks"))
    assert "inactive" in body["error"]


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key",
        "Api-Key ",
        "Api-Key nonsense",
        "Api-Key abcdefgh.wrongsecretwrongsecretwrongsecret",
        "Api-Key a.b c",
        "Api-Key " + "x" * 5000,
        "api-key ....",
    ],
)
def test_bad_keys_are_401_json(api, header):
    api.post("/api-keys", {"name": "ci"}, format="json")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/tasks")

    assert_401(response)
    assert response["WWW-Authenticate"]


def test_a_right_prefix_with_a_wrong_secret_is_refused(api):
    body = api.post("/api-keys", {"name": "ci"}, format="json").json()
    forged = body["prefix"] + "." + "A" * 32

    assert_401(key_client(forged).get("/tasks"))


def test_a_non_ascii_key_is_401(api):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key clé.secrète".encode().decode("latin-1"))

    assert_401(client.get("/tasks"))


def test_another_users_key_is_404_to_show_or_revoke(api, outsider_api):
    prefix = api.post("/api-keys", {"name": "mine"}, format="json").json()["prefix"]

    assert outsider_api.get(f"/api-keys/{prefix}").status_code == 404
    response = outsider_api.delete(f"/api-keys/{prefix}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert APIKey.objects.get(prefix=prefix).revoked is False
    assert outsider_api.get("/api-keys").json()["results"] == []
    assert api.delete("/api-keys/" + "z" * 500).status_code == 404


def test_a_key_cannot_create_or_revoke_keys(api):
    body = api.post("/api-keys", {"name": "ci"}, format="json").json()
    program = key_client(body["key"])

    created = program.post("/api-keys", {"name": "successor"}, format="json")
    revoked = program.delete(f"/api-keys/{body['prefix']}")

    assert created.status_code == 403 and created.json()["code"] == "permission_denied"
    assert revoked.status_code == 403
    assert APIKey.objects.count() == 1
    assert program.get("/api-keys").status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 51}, "name"),
        ({"name": 5}, None),
        ({"name": ["a"]}, "name"),
        ({"name": "ci", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ci", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ci", "expires_at": "9999-12-31T23:59:59-12:00"}, "expires_at"),
        ({"name": "ci", "expires_at": 5}, "expires_at"),
        ({"name": "ci", "scopes": ["all"]}, "scopes"),
        ([], None),
    ],
)
def test_bad_bodies_are_400_with_fields(api, payload, field):
    response = api.post("/api-keys", payload, format="json")

    if payload == {"name": 5}:
        # DRF's CharField accepts a number as its text.
        assert response.status_code == 201
        return
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    if field:
        assert field in body["fields"]
    assert APIKey.objects.count() == 0


def test_malformed_json_is_400(api):
    response = api.post("/api-keys", "{nope", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_anonymous_callers_are_401():
    assert_401(APIClient().get("/api-keys"))
    assert_401(APIClient().post("/api-keys", {"name": "x"}, format="json"))


def test_the_number_of_unrevoked_keys_is_capped(api, owner, settings):
    settings.API_KEYS_MAX_PER_USER = 2
    first = api.post("/api-keys", {"name": "a"}, format="json").json()
    api.post("/api-keys", {"name": "b"}, format="json")

    refused = api.post("/api-keys", {"name": "c"}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "cap_reached"
    api.delete(f"/api-keys/{first['prefix']}")
    assert api.post("/api-keys", {"name": "c"}, format="json").status_code == 201


def test_the_list_pages_newest_first(api, owner):
    for n in range(3):
        services.create_api_key(user=owner, name=f"k{n}")

    page = api.get("/api-keys", {"page_size": 2}).json()

    assert [k["name"] for k in page["results"]] == ["k2", "k1"]
    rest = api.get(page["next"]).json()
    assert [k["name"] for k in rest["results"]] == ["k0"]


def test_a_staff_users_key_reads_metrics(make_user):
    staff = make_user("ops", is_staff=True)
    _, key = services.create_api_key(user=staff, name="prometheus")

    response = key_client(key).get("/metrics")

    assert response.status_code == 200
    assert b"taskrunner" in response.content or b"# HELP" in response.content


@pytest.fixture
def admin_client(make_user):
    client = Client()
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    return client


def test_the_admin_lists_and_revokes_keys(admin_client, owner):
    api_key, key = services.create_api_key(user=owner, name="deploy bot")

    page = admin_client.get("/admin/accounts/apikey/")
    assert page.status_code == 200
    assert api_key.prefix in page.content.decode() and "deploy bot" in page.content.decode()
    assert key.partition(".")[2] not in page.content.decode()

    done = admin_client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [api_key.pk]},
        follow=True,
    )

    assert done.status_code == 200
    api_key.refresh_from_db()
    assert api_key.revoked is True
    assert_401(key_client(key).get("/tasks"))


def test_a_key_made_in_the_admin_is_shown_once_and_works(admin_client, owner):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {"name": "from admin", "user": owner.pk, "expiry_date_0": "", "expiry_date_1": ""},
        follow=True,
    )

    assert response.status_code == 200
    api_key = APIKey.objects.get(name="from admin")
    assert api_key.user == owner
    shown = [str(m) for m in response.context["messages"]]
    key = next(word for m in shown for word in m.split() if word.startswith(api_key.prefix + "."))
    key = key.rstrip(".")
    assert key_client(key).get("/me").json()["username"] == owner.username


def test_the_service_refuses_a_past_expiry(owner):
    from tasks.services import ServiceError

    with pytest.raises(ServiceError):
        services.create_api_key(
            user=owner, name="x", expires_at=timezone.now() - timedelta(seconds=1)
        )
    assert not client_for(owner).get("/api-keys").json()["results"]


@pytest.mark.parametrize("position", ["abc", "%00", "9" * 30, "2030-13-45T00:00:00"])
def test_a_forged_cursor_is_400_not_500(api, owner, position):
    import base64

    services.create_api_key(user=owner, name="k")
    cursor = base64.b64encode(f"p={position}".encode()).decode()

    response = api.get("/api-keys", {"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.django_db(transaction=True)
def test_two_creations_at_once_cannot_both_pass_the_cap(make_user, settings):
    from tasks.services import ServiceError

    from .conftest import race

    settings.API_KEYS_MAX_PER_USER = 1
    user = make_user("racer")

    def create():
        try:
            services.create_api_key(user=user, name="k")
            return "created"
        except ServiceError as exc:
            return exc.code

    assert sorted(race(create, create, create)) == ["cap_reached", "cap_reached", "created"]
    assert APIKey.objects.filter(user=user).count() == 1
