import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db


def login(body, **kwargs):
    return APIClient().post("/login", body, format="json", **kwargs)


def test_it_returns_a_token_for_good_credentials(owner):
    response = login({"username": "owner", "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert AccessToken(body["Token"])["user_id"] == str(owner.pk)
    assert body["access"] == body["Token"]
    assert body["refresh"] and body["token_type"] == "Bearer"
    assert body["expires_in"] > 0


def test_the_token_it_returns_opens_the_task_api(owner):
    token = login({"username": "owner", "password": PASSWORD}).json()["Token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    assert client.get("/tasks").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "owner"},
        {"password": PASSWORD},
        {"username": "", "password": PASSWORD},
        {"username": "   ", "password": PASSWORD},
        {"username": "owner", "password": ""},
        {"username": None, "password": None},
        {"username": 12, "password": PASSWORD},
        [],
    ],
)
def test_it_requires_username_and_password(owner, body):
    response = login(body)

    assert response.status_code == 401
    assert response.json() == {
        "error": "Username and Password are required",
        "code": "not_authenticated",
    }


def test_it_refuses_a_wrong_password(owner):
    response = login({"username": "owner", "password": "wrong"})

    assert response.status_code == 401
    assert response.json() == {
        "error": "Invalid username or password",
        "code": "authentication_failed",
    }


def test_it_refuses_an_unknown_user(db):
    response = login({"username": "nobody", "password": PASSWORD})

    assert response.status_code == 401
    assert response.json()["error"] == "Invalid username or password"


def test_it_refuses_an_inactive_user(make_user):
    make_user("sleepy", is_active=False)

    response = login({"username": "sleepy", "password": PASSWORD})

    assert response.status_code == 401
    assert "error" in response.json()
    assert "Token" not in response.json()


def test_malformed_json_is_a_json_400(owner):
    response = APIClient().post(
        "/login", data='{"username": "owner",', content_type="application/json"
    )

    assert response.status_code == 400
    assert set(response.json()) == {"error", "code"}
    assert response.json()["code"] == "parse_error"


def test_it_works_with_a_trailing_slash(owner):
    response = APIClient().post(
        "/login/", {"username": "owner", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 200
    assert "Token" in response.json()
