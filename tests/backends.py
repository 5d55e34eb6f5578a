"""Which database and cache the suite runs on, and whether they are reachable.

The suite runs on whatever DATABASE_URL and CACHE_URL configure (`make test`:
SQLite and a memory cache; `make test-pg`: PostgreSQL and a Redis cache). When PostgreSQL
or Redis is asked for but does not answer, the run skips with the reason on a
developer's machine and fails under CI=true, where a skip would hide that the
second setup never ran.
"""

from __future__ import annotations

import os

from django.conf import settings


def uses_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def uses_redis() -> bool:
    return "redis" in settings.CACHES["default"]["BACKEND"].lower()


def redis_url() -> str:
    location = settings.CACHES["default"]["LOCATION"]
    return location[0] if isinstance(location, list) else location


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_params(dbname: str | None = None, *, database: dict | None = None) -> dict:
    """psycopg connection keywords for the configured server (any database on
    it), or for the server of `database`, a Django DATABASES entry."""
    db = database or settings.DATABASES["default"]
    params = {
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "dbname": dbname or db["NAME"],
        "connect_timeout": 5,
    }
    return {key: value for key, value in params.items() if value is not None}


def unreachable_services() -> list[str]:
    """Human-readable reasons, one per configured service that does not answer."""
    problems = []
    if uses_postgres():
        import psycopg

        params = postgres_params()
        try:
            # The maintenance database: the configured one may not exist yet
            # (pytest-django creates test_<NAME> itself).
            psycopg.connect(**{**params, "dbname": "postgres"}).close()
        except psycopg.Error as exc:
            problems.append(
                f"PostgreSQL at {params.get('host')}:{params.get('port', 5432)} "
                f"is not reachable ({str(exc).strip().splitlines()[0]})"
            )
    if uses_redis():
        import redis

        try:
            redis.Redis.from_url(redis_url(), socket_connect_timeout=5).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis at {redis_url()} is not reachable ({exc})")
    return problems
