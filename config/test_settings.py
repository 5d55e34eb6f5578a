"""Settings for the test suite: the normal settings, with jobs run inline."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DEBUG", "False")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from .settings import *  # noqa: F403
from .settings import CACHES, Q_CLUSTER, REST_FRAMEWORK, TASKS

# django-q2 runs each task in the request that enqueued it.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
TASKS = {**TASKS, "DEFAULT_SECONDS": 0.2, "PROGRESS_INTERVAL": 0.0}
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Throttles stay on but out of the way of tests that make many requests;
# the throttling tests set the low rates they check.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": dict.fromkeys(REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "10000/min"),
}
if CACHES["default"]["BACKEND"] == "accounts.counters.DatabaseCounterCache":
    # The suite is one process, and clears the cache around every test, also
    # tests without a database; tests of the database counters choose them.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's default in-memory test database: tests that race
    # real threads need SQLite's busy timeout, which a shared-cache in-memory
    # database ignores (it fails at once with "database table is locked").
    # Its folder goes at exit, with the -wal/-shm files Django leaves behind.
    _test_db_dir = tempfile.mkdtemp(prefix="task-runner-test-")
    atexit.register(shutil.rmtree, _test_db_dir, ignore_errors=True)
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(_test_db_dir, "test.sqlite3")}  # noqa: F405

# Tests that drive a broker's housekeeping must not leave a webhook sender
# thread polling the test database; tests send with webhooks.delivery directly.
WEBHOOK_SEND = False
