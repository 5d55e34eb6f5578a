"""Refresh tokens: revoked with the credentials, bounded sessions, atomic
rotation, and token answers that no cache keeps."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import jwt
import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.utils import aware_utcnow

from .conftest import PASSWORD
from .test_throttling_and_limits import rates

NEW_PASSWORD = "a different horse battery staple"


def login(username="owner", password=PASSWORD):
    response = APIClient().post(
        "/login", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token):
    return APIClient().post("/token/refresh", {"refresh": token}, format="json")


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_read_in_any_usual_case(owner, scheme):
    token = login()["access"]

    response = APIClient(HTTP_AUTHORIZATION=f"{scheme} {token}").get("/me")

    assert response.status_code == 200, response.content
    unauthenticated = APIClient().get("/me")
    assert unauthenticated["WWW-Authenticate"].startswith("Bearer ")


# --- Revocation -----------------------------------------------------------


@pytest.mark.django_db
def test_a_password_change_revokes_every_refresh_token_of_the_user(owner, outsider):
    sessions = [login()["refresh"], login()["refresh"]]
    rotated = refresh(login()["refresh"]).json()["refresh"]
    others = login("outsider")["refresh"]

    owner.set_password(NEW_PASSWORD)
    owner.save()

    for token in [*sessions, rotated]:
        response = refresh(token)
        assert response.status_code == 401, response.content
        assert "blacklisted" in response.json()["error"]
    # Other users keep their sessions; the new password logs in.
    assert refresh(others).status_code == 200
    assert refresh(login(password=NEW_PASSWORD)["refresh"]).status_code == 200


@pytest.mark.django_db
def test_the_admin_password_form_revokes_refresh_tokens(owner, make_user):
    token = login()["refresh"]
    admin = Client()
    admin.force_login(make_user("root", is_staff=True, is_superuser=True))

    response = admin.post(
        f"/admin/auth/user/{owner.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    assert response.status_code == 302, response.content
    assert refresh(token).status_code == 401


@pytest.mark.django_db
def test_deactivation_revokes_refresh_tokens_for_good(owner):
    token = login()["refresh"]

    owner.is_active = False
    owner.save()
    refused_while_inactive = refresh(token)
    owner.is_active = True
    owner.save()

    assert refused_while_inactive.status_code == 401
    # Reactivating the user does not bring the old session back.
    assert refresh(token).status_code == 401
    assert BlacklistedToken.objects.filter(token__jti=claims(token)["jti"]).exists()


@pytest.mark.django_db
def test_deleting_a_user_blacklists_their_refresh_tokens(owner):
    token = login()["refresh"]

    owner.delete()

    assert BlacklistedToken.objects.filter(token__jti=claims(token)["jti"]).exists()
    assert refresh(token).status_code == 401


@pytest.mark.django_db
def test_other_saves_and_a_hasher_upgrade_do_not_revoke(owner, settings):
    token = login()["refresh"]
    owner.email = "owner@example.com"
    owner.save()
    # At the next login Django re-hashes the password with the preferred hasher.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    login()
    owner.refresh_from_db()

    assert owner.password.startswith(PBKDF2PasswordHasher.algorithm)
    assert refresh(token).status_code == 200


# --- Session maximum age ---------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """simplejwt's and the session code's notion of now, movable: clock[0] += s.
    PyJWT refuses a token issued in the future by the real clock, so tests
    start in the past and move towards now."""
    offset = [timedelta(0)]

    def now():
        return aware_utcnow() + offset[0]

    monkeypatch.setattr("rest_framework_simplejwt.tokens.aware_utcnow", now)
    monkeypatch.setattr("accounts.tokens.aware_utcnow", now)
    return offset


@pytest.mark.django_db
def test_a_session_ends_at_its_maximum_age_however_often_refreshed(owner, settings, clock):
    settings.JWT_SESSION_MAX_SECONDS = 3600
    clock[0] = timedelta(minutes=-59)
    first = login()
    session_end = claims(first["refresh"])["iat"] + 3600
    assert claims(first["refresh"])["session_start"] == claims(first["refresh"])["iat"]

    token = first["refresh"]
    for minutes in (20, 20, 19):  # refreshed at +20, +40 and +59 minutes
        clock[0] += timedelta(minutes=minutes)
        response = refresh(token)
        assert response.status_code == 200, response.content
        body = response.json()
        token = body["refresh"]
        # Neither token outlives the session (the refresh lifetime is a day).
        assert claims(token)["exp"] <= session_end
        assert claims(body["access"])["exp"] <= session_end
        assert body["expires_in"] <= 900
    assert body["expires_in"] <= 60

    clock[0] += timedelta(minutes=2)  # the session is 61 minutes old
    late = refresh(token)

    assert late.status_code == 401
    assert late.json()["error"]
    # A new login starts a new session.
    clock[0] = timedelta(0)
    assert refresh(login()["refresh"]).status_code == 200


@pytest.mark.django_db
def test_the_session_age_is_checked_even_for_a_token_that_has_not_expired(owner, settings, clock):
    settings.JWT_SESSION_MAX_SECONDS = 3600
    clock[0] = timedelta(seconds=-61)
    token = login()["refresh"]
    # The limit is lowered after the login: the token's own exp is still ahead.
    settings.JWT_SESSION_MAX_SECONDS = 60
    clock[0] += timedelta(seconds=61)

    response = refresh(token)

    assert response.status_code == 401
    assert response.json() == {
        "error": "The session has reached its maximum age; log in again.",
        "code": "authentication_failed",
    }


# --- Cache-Control ------------------------------------------------------------


def assert_no_store(response):
    directives = {d.strip() for d in response["Cache-Control"].split(",")}
    assert "no-store" in directives, response["Cache-Control"]


@pytest.mark.django_db
def test_token_answers_are_no_store(owner):
    client = APIClient()
    good = client.post("/login", {"username": "owner", "password": PASSWORD}, format="json")
    bad = client.post("/login", {"username": "owner", "password": "nope"}, format="json")
    rotated = refresh(good.json()["refresh"])
    reused = refresh(good.json()["refresh"])

    assert [r.status_code for r in (good, bad, rotated, reused)] == [200, 401, 200, 401]
    for response in (good, bad, rotated, reused):
        assert_no_store(response)


# --- Atomic rotation -------------------------------------------------------------


def send_together(url, body, times):
    """POST `body` to `url` from `times` threads at once, each on its own connection."""
    start = threading.Barrier(times)

    def send(_):
        with requests.Session() as session:
            start.wait()
            return session.post(url, json=body, timeout=60)

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(send, range(times)))


@pytest.mark.django_db(transaction=True)
def test_the_same_refresh_token_sent_ten_times_at_once_wins_exactly_once(live_server, owner):
    for _round in range(3):
        token = requests.post(
            live_server.url + "/login",
            json={"username": "owner", "password": PASSWORD},
            timeout=60,
        ).json()["refresh"]
        before = OutstandingToken.objects.count()

        answers = send_together(live_server.url + "/token/refresh", {"refresh": token}, 10)

        codes = sorted(r.status_code for r in answers)
        assert codes == [200] + [401] * 9, [r.content for r in answers]
        for response in answers:
            assert response.json()["error" if response.status_code == 401 else "refresh"]
        # One new token family member, and it works.
        assert OutstandingToken.objects.count() == before + 1
        winner = next(r for r in answers if r.status_code == 200).json()
        again = requests.post(
            live_server.url + "/token/refresh", json={"refresh": winner["refresh"]}, timeout=60
        )
        assert again.status_code == 200


@pytest.mark.django_db
def test_throttled_token_answers_are_no_store_too(owner):
    with rates(login_ip="1/min"):
        assert login()  # the one allowed
        throttled = APIClient().post(
            "/login", {"username": "owner", "password": PASSWORD}, format="json"
        )
        refused_refresh = refresh("not-a-token")

    assert throttled.status_code == 429
    assert refused_refresh.status_code == 429
    assert_no_store(throttled)
    assert_no_store(refused_refresh)


def test_housekeeping_deletes_the_records_of_expired_refresh_tokens(owner, monkeypatch):
    """Expired tokens are refused on their own; their rows would only grow."""
    from tasks import maintenance

    live, expired = login()["refresh"], login()["refresh"]
    refresh(live)  # blacklists it: its row must stay while it has not expired
    OutstandingToken.objects.filter(token=expired).update(
        expires_at=aware_utcnow() - timedelta(seconds=1)
    )
    monkeypatch.setattr(maintenance, "_next_retention", 0.0)
    assert maintenance.run_maintenance()["expired_tokens"] == 1
    assert not OutstandingToken.objects.filter(token=expired).exists()
    assert BlacklistedToken.objects.filter(token__token=live).exists()
