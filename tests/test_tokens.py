"""Login, refresh (rotating), logout (blacklist) and /me."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from .conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[1]


def login(client, username="owner"):
    response = client.post("/login", {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_login_returns_the_seed_token_and_a_refresh_token(owner):
    body = login(APIClient())

    assert body["Token"] == body["access"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()
    claims = jwt.decode(body["refresh"], options={"verify_signature": False})
    assert claims["token_type"] == "refresh"
    assert claims["user_id"] == str(owner.pk)


def test_refresh_rotates_and_the_old_refresh_token_is_refused(owner):
    client = APIClient()
    first = login(client)

    refreshed = client.post("/token/refresh", {"refresh": first["refresh"]}, format="json")
    again = client.post("/token/refresh", {"refresh": first["refresh"]}, format="json")

    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refresh"] != first["refresh"]
    assert new["Token"] == new["access"]
    me = APIClient(HTTP_AUTHORIZATION=f"Bearer {new['access']}").get("/me")
    assert me.status_code == 200
    assert again.status_code == 401
    assert "blacklisted" in again.json()["error"]
    assert BlacklistedToken.objects.filter(token__user=owner).count() == 1


def test_logout_blacklists_the_refresh_token(owner):
    client = APIClient()
    tokens = login(client)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    response = client.post("/logout", {"refresh": tokens["refresh"]}, format="json")
    after = client.post("/token/refresh", {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 200
    assert response.json() == {"message": "Logged out"}
    assert BlacklistedToken.objects.filter(token__user=owner).count() == 1
    assert after.status_code == 401
    assert set(after.json()) == {"error", "code"}
    assert after.json()["code"] == "authentication_failed"


def test_logout_refuses_another_users_refresh_token(owner, outsider, outsider_api):
    tokens = login(APIClient(), "owner")

    response = outsider_api.post("/logout", {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == {"refresh": ["This refresh token belongs to another user."]}
    assert BlacklistedToken.objects.count() == 0


def test_logout_needs_a_token_and_a_valid_refresh_token(api):
    assert APIClient().post("/logout", {"refresh": "x"}, format="json").status_code == 401
    missing = api.post("/logout", {}, format="json")
    garbled = api.post("/logout", {"refresh": "not-a-token"}, format="json")

    assert missing.status_code == 400
    assert "refresh" in missing.json()["fields"]
    assert garbled.status_code == 400
    assert "refresh" in garbled.json()["fields"]
    assert BlacklistedToken.objects.count() == 0


def test_refresh_is_refused_for_a_deactivated_or_deleted_user(make_user):
    alice = make_user("alice")
    bob = make_user("bob")
    alice_tokens, bob_tokens = login(APIClient(), "alice"), login(APIClient(), "bob")
    alice.is_active = False
    alice.save()
    bob.delete()

    for tokens in (alice_tokens, bob_tokens):
        response = APIClient().post("/token/refresh", {"refresh": tokens["refresh"]}, format="json")
        assert response.status_code == 401
        assert response.json()["error"]


def test_me_describes_the_caller(api, owner):
    response = api.get("/me")

    assert response.status_code == 200
    assert response.json()["username"] == "owner"
    assert response.json()["id"] == owner.pk
    assert response.json()["is_staff"] is False
    assert APIClient().get("/me").status_code == 401


@pytest.mark.parametrize("signing_key", ["a-separate-jwt-signing-key-" + "k" * 40])
def test_tokens_are_signed_with_jwt_signing_key_not_secret_key(signing_key):
    secret_key = "the-django-secret-key-" + "s" * 40
    script = (
        "import django, json; django.setup();"
        "from rest_framework_simplejwt.tokens import AccessToken;"
        "t = AccessToken(); t['user_id'] = '1'; print(json.dumps({'token': str(t)}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "False",
        "SECRET_KEY": secret_key,
        "JWT_SIGNING_KEY": signing_key,
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = json.loads(out.stdout.strip().splitlines()[-1])["token"]

    assert jwt.decode(token, signing_key, algorithms=["HS256"])["user_id"] == "1"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, secret_key, algorithms=["HS256"])
