"""Settings for the test suite: the normal settings, with jobs run inline."""

import os

os.environ.setdefault("DEBUG", "False")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from .settings import *  # noqa: F403
from .settings import Q_CLUSTER, REST_FRAMEWORK, TASKS

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
