"""Throttle counters in the database (the default without CACHE_URL): shared
by threads, processes and hosts, so a limit holds however many web
processes serve the requests."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import requests
from django.core.cache import cache

from accounts.counters import DatabaseCounterCache
from accounts.models import ThrottleCounter
from accounts.throttles import TaskCreateThrottle

from .conftest import race
from .e2e.harness import PASSWORD, ROOT, Stack
from .test_throttling_and_limits import rates

DATABASE_COUNTERS = {"default": {"BACKEND": "accounts.counters.DatabaseCounterCache"}}


@pytest.fixture
def database_counters(settings):
    settings.CACHES = DATABASE_COUNTERS
    yield cache
    cache.clear()


@pytest.mark.django_db
def test_counters_add_increment_and_expire(database_counters, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr("accounts.counters.time.time", lambda: now[0])

    assert database_counters.add("k", 1, timeout=60) is True
    assert database_counters.add("k", 5, timeout=60) is False  # exists: unchanged
    assert database_counters.incr("k") == 2
    assert database_counters.incr("k", 3) == 5
    assert database_counters.get("k") == 5
    with pytest.raises(ValueError):
        database_counters.incr("missing")

    now[0] += 61  # expired: gone for reads and increments, replaced by the next add
    assert database_counters.get("k") is None
    with pytest.raises(ValueError):
        database_counters.incr("k")
    assert database_counters.add("k", 1, timeout=60) is True
    assert database_counters.get("k") == 1
    # Dead rows of other keys were swept by that add.
    database_counters.add("other", 1, timeout=1)
    now[0] += 2
    database_counters.add("third", 1, timeout=60)
    assert set(ThrottleCounter.objects.values_list("key", flat=True)) == {
        ":1:k",
        ":1:third",
    }


@pytest.mark.django_db
def test_an_increment_is_one_statement(database_counters, django_assert_num_queries):
    # Every throttled request pays for it: no transaction of its own.
    database_counters.add("k", 1, timeout=60)
    with django_assert_num_queries(1):
        assert database_counters.incr("k", 2) == 3
    assert database_counters.get("k") == 3


@pytest.mark.django_db
def test_long_keys_are_hashed_and_only_integers_are_stored(database_counters):
    long_key = "throttle_login_username_" + "ab" * 300
    assert database_counters.add(long_key, 1, timeout=60)
    assert database_counters.incr(long_key) == 2
    assert ThrottleCounter.objects.get().key.startswith("sha256:")
    with pytest.raises(TypeError):
        database_counters.set("k", "text")


@pytest.mark.django_db(transaction=True)
@rates(task_create="50/min")
def test_threads_counting_in_the_database_pass_exactly_the_rate(database_counters, owner):
    request = SimpleNamespace(user=owner)

    def hammer():  # 10 checks, on a database connection of its own
        return sum(TaskCreateThrottle().allow_request(request, None) for _ in range(10))

    assert sum(race(*[hammer] * 16)) == 50


def test_without_cache_url_the_settings_keep_counters_in_the_database():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SECRET_KEY": "x" * 50}
    env["CACHE_URL"] = ""
    script = (
        "import django; django.setup(); from django.core.cache import caches; "
        "print(type(caches['default']).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip().splitlines()[-1] == DatabaseCounterCache.__name__


@pytest.mark.e2e
@pytest.mark.slow
def test_four_gunicorn_processes_share_the_login_limit(tmp_path):
    """`make serve` without CACHE_URL: four processes, a new connection per request."""
    stack = Stack(
        tmp_path,
        env={
            "CACHE_URL": "",
            "THROTTLE_LOGIN_IP": "10000/min",
            "THROTTLE_LOGIN_USERNAME": "10/hour",
            # Log lines that name their process.
            "LOG_FORMAT": "json",
        },
        web_workers=4,
        web_threads=2,
    )
    try:
        stack.start(("alice",), cluster=False)
        for _attempt in range(2):
            hour = int(time.time() // 3600)
            codes = [
                requests.post(
                    stack.base + "/login",
                    json={"username": "alice", "password": PASSWORD},
                    headers={"Connection": "close"},
                    timeout=30,
                ).status_code
                for _ in range(40)
            ]
            if int(time.time() // 3600) == hour:
                break
            # An hour began meanwhile (two windows): once more, in the new one.
            stack.manage("shell", "-c", "from django.core.cache import cache; cache.clear()")
        assert codes.count(200) == 10, codes
        assert set(codes) == {200, 429}
        # Django's JSON warning for each refused login names its process.
        logged = [json.loads(raw) for raw in stack.log("web").splitlines() if raw[:1] == "{"]
        pids = {
            line["process"]
            for line in logged
            if line["logger"] == "django.request" and line["message"] == "Too Many Requests: /login"
        }
        assert len(pids) >= 2, stack.log("web")[-2000:]
    finally:
        stack.stop()
