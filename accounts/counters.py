"""A cache backend for throttle counters, kept in the database.

Throttles only hold if every web process counts in the same place. With
several processes (`make serve` runs gunicorn with WEB_WORKERS of them) or
hosts, per-process memory lets each process's share through. Rather than
require Redis, the default (CACHE_URL unset) keeps the counters in the one
thing every web process of every documented setup already shares: the
database (a SQLite file on one host, PostgreSQL when scaled out). Django's
own database cache cannot serve: its `incr` reads, adds and writes back, so
processes counting together lose increments. Here an increment is one
UPDATE ... RETURNING of the row (PostgreSQL's row lock, SQLite's write lock
order concurrent ones; each reads back its own increment), and creating a
window's row relies on the unique key. The cost is one small write per
throttled request (logins,
refreshes, task submissions); CACHE_URL=redis://... moves them to Redis.

Only integer values are stored: it is a counter store, not a general cache.
"""

from __future__ import annotations

import functools
import hashlib
import time
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.db import IntegrityError, connections, router, transaction

# A key never expires: far enough ahead, and still a plain float.
NEVER = 1e15


class DatabaseCounterCache(BaseCache):
    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)

    @staticmethod
    def _model():
        from .models import ThrottleCounter

        return ThrottleCounter

    def _db(self) -> str:
        return router.db_for_write(self._model())

    def _key(self, key, version=None) -> str:
        # No memcached key rules to check: long keys are hashed below.
        key = self.make_key(key, version=version)
        # Throttle keys carry a hex-encoded username of up to 150 characters.
        if len(key) > 200:
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return key

    def _expires(self, timeout) -> float:
        timeout = self.get_backend_timeout(timeout)
        return NEVER if timeout is None else timeout

    @staticmethod
    def _int(value) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("DatabaseCounterCache stores integer counters only.")
        return value

    def _live(self, key: str):
        return self._model().objects.using(self._db()).filter(key=key, expires__gt=time.time())

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        key, value = self._key(key, version), self._int(value)
        rows = self._model().objects.using(self._db())
        with transaction.atomic(using=self._db()):
            # Dead rows (this key's last window among them) go as new ones come.
            rows.filter(expires__lte=time.time()).delete()
            try:
                with transaction.atomic(using=self._db()):
                    rows.create(key=key, value=value, expires=self._expires(timeout))
            except IntegrityError:  # another process created it first
                return False
        return True

    def get(self, key, default=None, version=None):
        value = self._live(self._key(key, version)).values_list("value", flat=True).first()
        return default if value is None else value

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None) -> None:
        key, value = self._key(key, version), self._int(value)
        self._model().objects.using(self._db()).update_or_create(
            key=key, defaults={"value": value, "expires": self._expires(timeout)}
        )

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None) -> bool:
        return bool(self._live(self._key(key, version)).update(expires=self._expires(timeout)))

    def incr(self, key, delta=1, version=None) -> int:
        key = self._key(key, version)
        db = self._db()
        with connections[db].cursor() as cursor:
            cursor.execute(_increment_sql(db), [delta, key, time.time()])
            row = cursor.fetchone()
        if row is None:
            raise ValueError(f"Key '{key}' not found")
        return row[0]

    def delete(self, key, version=None) -> bool:
        deleted, _ = (
            self._model().objects.using(self._db()).filter(key=self._key(key, version)).delete()
        )
        return bool(deleted)

    def has_key(self, key, version=None) -> bool:
        return self._live(self._key(key, version)).exists()

    def clear(self) -> None:
        self._model().objects.using(self._db()).all().delete()


@functools.cache
def _increment_sql(db: str) -> str:
    """Add a delta (%s) to the live counter of a key (%s, still alive at
    %s) and read its new value back, in one statement; written once per
    database alias `db` (the quoting is its database's).

    The ORM has no UPDATE ... RETURNING: through it, an increment is a
    transaction of its own (an UPDATE, then a SELECT under its row lock),
    four round trips, and it was the largest single cost of a `POST /tasks`
    (bench.submit; bench/README.md has the figures). Both databases run
    this one (SQLite since 3.35), through Django's cursor like any query."""
    from .models import ThrottleCounter

    meta: Any = ThrottleCounter._meta  # its fields are all concrete columns
    quote = connections[db].ops.quote_name
    value, key_column, expires = (
        quote(meta.get_field(f).column) for f in ("value", "key", "expires")
    )
    return (
        f"UPDATE {quote(meta.db_table)} SET {value} = {value} + %s "  # noqa: S608 (names from the model)
        f"WHERE {key_column} = %s AND {expires} > %s RETURNING {value}"
    )
