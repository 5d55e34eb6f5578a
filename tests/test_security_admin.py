"""The admin: django-q2's pages are gone (they ran arbitrary import paths),
and its login is throttled on the counters of /login."""

import pytest
from django.contrib import admin
from django.test import Client
from rest_framework.test import APIClient

from .conftest import PASSWORD
from .test_throttling_and_limits import rates

pytestmark = pytest.mark.django_db

DJANGO_Q_PAGES = [
    "/admin/django_q/",
    "/admin/django_q/schedule/",
    "/admin/django_q/schedule/add/",
    "/admin/django_q/ormq/",
    "/admin/django_q/success/",
    "/admin/django_q/failure/",
]


@pytest.fixture
def superuser_client(make_user):
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("url", DJANGO_Q_PAGES)
def test_django_q2_admin_pages_are_gone(superuser_client, url):
    assert superuser_client.get(url).status_code == 404
    assert superuser_client.post(url, {"func": "os.system", "args": "'id'"}).status_code == 404


def test_the_admin_index_lists_no_django_q2_model(superuser_client):
    page = superuser_client.get("/admin/").content.decode()

    assert "django_q" not in page
    assert not [m for m in admin.site._registry if m._meta.app_label == "django_q"]
    # The project's own pages are still there.
    assert "/admin/tasks/task/" in page


# --- The admin's login is throttled like /login -----------------------------------


@pytest.fixture
def staff(make_user):
    return make_user("staff", is_staff=True)


def admin_login(username, password, ip="10.0.0.1"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}
    )
    return client, response


def assert_admin_throttled(client, response):
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "Too many login attempts. Try again in" in response.content.decode()
    # Not logged in: the admin index still sends to the login page.
    assert client.get("/admin/").status_code == 302


@rates(login_username="3/min", login_ip="1000/min")
def test_admin_login_is_limited_per_username_even_with_the_right_password(staff):
    wrong = [admin_login("staff", "wrong", ip=f"10.0.0.{i}")[1].status_code for i in range(3)]
    client, right = admin_login("staff", PASSWORD, ip="10.0.0.99")

    assert wrong == [200, 200, 200]  # the form again, "enter a correct username..."
    assert_admin_throttled(client, right)
    # Another staff user from the same address is not affected.
    other = Client(REMOTE_ADDR="10.0.0.99")
    other_user = staff.__class__.objects.create_user("other", password=PASSWORD, is_staff=True)
    response = other.post("/admin/login/", {"username": other_user.username, "password": PASSWORD})
    assert response.status_code == 302


@rates(login_username="1000/min", login_ip="3/min")
def test_admin_login_is_limited_per_client_address(staff):
    for i in range(3):
        assert admin_login(f"nobody{i}", "wrong")[1].status_code == 200

    assert_admin_throttled(*admin_login("staff", PASSWORD))
    client, response = admin_login("staff", PASSWORD, ip="10.0.0.2")
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


@rates(login_username="3/min", login_ip="1000/min")
def test_admin_and_api_logins_share_their_counters(staff):
    for _ in range(2):
        api = APIClient().post("/login", {"username": "staff", "password": "x"}, format="json")
        assert api.status_code == 401
    assert admin_login("staff", "wrong")[1].status_code == 200

    assert_admin_throttled(*admin_login("staff", PASSWORD))
    api = APIClient().post("/login", {"username": "staff", "password": PASSWORD}, format="json")
    assert api.status_code == 429


def test_the_admin_login_page_still_works(staff):
    assert Client().get("/admin/login/").status_code == 200
    client, response = admin_login("staff", PASSWORD)
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
