import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connections
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

PASSWORD = "correct horse battery staple"


# A second into a day, so into a minute and an hour too: see fresh_throttles.
THROTTLE_CLOCK = 1_800_000_000.0 - 1_800_000_000.0 % 86400 + 1.0


@pytest.fixture(autouse=True)
def fresh_throttles(monkeypatch):
    """Throttle counters live in the cache; each test starts with none, so
    requests made by earlier tests never throttle a later one. The throttles
    count in fixed windows of their period, so their clock stands still at the
    start of one: a test never sees a window end between two of its requests
    unless it moves the clock (throttle_clock)."""
    from accounts.throttles import RateFromSettings

    clock = [THROTTLE_CLOCK]
    monkeypatch.setattr(RateFromSettings, "timer", staticmethod(lambda: clock[0]))
    cache.clear()
    yield clock
    cache.clear()


@pytest.fixture
def throttle_clock(fresh_throttles):
    """The throttles' clock, as a one-item list to move: clock[0] += 60."""
    return fresh_throttles


@pytest.fixture
def make_user(db):
    def make(username="alice", **extra):
        return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)

    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def outsider(make_user):
    return make_user("outsider")


def client_for(user) -> APIClient:
    client = APIClient()
    token = RefreshToken.for_user(user).access_token
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def api(owner):
    """An API client logged in as `owner`."""
    return client_for(owner)


@pytest.fixture
def outsider_api(outsider):
    return client_for(outsider)


@pytest.fixture
def run_jobs(django_capture_on_commit_callbacks):
    """Run what is enqueued on commit (inline, django-q2 sync) as it commits."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


@pytest.fixture
def task_settings(settings):
    """Change TASKS settings for one test: task_settings(LEASE_SECONDS=1)."""

    def change(**values):
        settings.TASKS = {**settings.TASKS, **values}

    return change


@pytest.fixture
def queue_only(settings):
    """Submits stay queued, as in production, even where commits really
    happen (transactional tests): nothing runs them inline. A test that
    calls worker.run_task itself must not use this: outside inline mode a
    worker starts its lease keeper thread."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}


def race(*calls):
    """Run the calls at once, each in a thread of its own with its own
    database connection; return their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def pytest_collection_modifyitems(config, items):
    """Skip everything when the configured PostgreSQL/Redis is down; fail under CI."""
    from tests.backends import in_ci, unreachable_services

    problems = unreachable_services()
    if not problems:
        return
    reason = "; ".join(problems)
    if in_ci():
        pytest.exit(f"CI=true and {reason}.", returncode=pytest.ExitCode.TESTS_FAILED)
    skip = pytest.mark.skip(reason=f"{reason} (set CI=true to fail instead)")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def errors_carry_a_code(monkeypatch):
    """Every JSON error answer any test gets must carry a known `code` beside
    `error`: checked on every request of the suite, not only where a test
    looks at the body."""
    import json

    from django.test.client import Client

    from config.errors import CODES

    request = Client.request

    def checked(self, **request_kwargs):
        response = request(self, **request_kwargs)
        if response.status_code >= 400 and response.get("Content-Type", "").startswith(
            "application/json"
        ):
            body = json.loads(response.content)
            where = (request_kwargs.get("REQUEST_METHOD"), request_kwargs.get("PATH_INFO"))
            assert isinstance(body, dict) and "error" in body, (where, body)
            assert body.get("code") in CODES, (where, response.status_code, body)
        return response

    monkeypatch.setattr(Client, "request", checked)


@pytest.fixture(autouse=True)
def no_listener_left():
    """A stream or a long-poll starts this process's listener or watcher (a
    connection of its own); stop it after each test, or the test database
    stays in use (and a later test would share it)."""
    yield
    from tasks import events

    if events._wakeups is not None:
        events._wakeups[1].stop()
        events._wakeups = None
