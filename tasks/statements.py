"""The worker path's two hottest writes, as SQL written once per database.

Every attempt costs a start and a completion. Built through the ORM, each
call assembled and compiled its UPDATE anew (with the webhook probe's
subquery), and that took longer than running it: 0.58 ms against 0.02 ms
of SQL on SQLite, 1.9 ms against 0.9 ms on PostgreSQL, per statement, in a
worker that runs a no-op in microseconds. `bench.drain` is the benchmark
that needs them (bench/README.md has the figures before and after).

So the quiet cases here, the ones almost every attempt takes, are written
once from the model's metadata, cached per database, and run through
Django's cursor (execute_wrapper, query logging and the tests' query
capture see them as any other). They mean exactly what their ORM
counterparts in `tasks.lifecycle` mean, which stay the slow paths: those
run only when a statement here moves nothing (the owner has webhooks, the
task has dependants, or the attempt is no longer ours). Nothing else in the
project writes SQL by hand except the claim (tasks.queue), which is made of
the same pieces (quoted names, prepared values, Django's cursor) defined
here, and a throttle counter's increment (accounts.counters).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.db import connection

from webhooks.models import Webhook

from .models import Status, Task


def start(
    *,
    task_id: int,
    attempt: int,
    worker: str,
    claimed_by: str | None,
    now: datetime,
    lease: datetime,
) -> bool:
    """Start a claimed attempt of a task whose owner has no active webhook:
    `lifecycle.start_attempt`'s first UPDATE. False when it moved nothing."""
    sql = _start_sql(connection.vendor, claimed_by is not None)
    params = [
        prep("started_at", now),
        worker,
        prep("lease_expires_at", lease),
        task_id,
        Status.IN_PROGRESS,
        attempt,
        prep("lease_expires_at", now),
    ]
    if claimed_by is not None:
        params.append(claimed_by)
    return execute(sql, params) == 1


def complete(*, task_id: int, attempt: int, output: Any, truncated: bool, now: datetime) -> bool:
    """End a running attempt `completed`, for a task nobody depends on whose
    owner has no active webhook: `lifecycle.complete_attempt`'s first
    UPDATE. False when it moved nothing."""
    params = [
        Status.COMPLETED,
        prep("updated_at", now),
        prep("output", output),
        truncated,
        prep("finished_at", now),
        task_id,
        Status.IN_PROGRESS,
        attempt,
        False,
    ]
    return execute(_complete_sql(connection.vendor), params) == 1


# --- The pieces every hand-written statement is made of (here and in tasks.queue)

Statement = tuple[str, list[Any]]


def execute(sql: str, params: list[Any]) -> int:
    """Run a written statement on Django's cursor; how many rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetch(statement: Statement) -> list[tuple]:
    """Run a written SELECT (or ... RETURNING) on Django's cursor; its rows."""
    sql, params = statement
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def prep(name: str, value: Any) -> Any:
    """`value` as the database takes it for the Task field `name` (a datetime
    as SQLite's text, JSON as the driver's JSON parameter...)."""
    return _FIELDS[name].get_db_prep_save(value, connection)


_FIELDS = {field.name: field for field in Task._meta.concrete_fields}


def table() -> str:
    """The task table's name, quoted for this database."""
    return connection.ops.quote_name(Task._meta.db_table)


def bare_column(name: str) -> str:
    """The Task field `name`'s column, quoted (for SET, which takes no table)."""
    return connection.ops.quote_name(_FIELDS[name].column)


def column(name: str) -> str:
    """The Task field `name`'s column, quoted, qualified by the table (so it
    reads the same inside a subquery on the same table)."""
    return f"{table()}.{bare_column(name)}"


def _column(model: Any, name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _unwatched() -> str:
    """The condition of `webhooks.outbox.unwatched()`, on the task row."""
    webhooks = connection.ops.quote_name(Webhook._meta.db_table)
    return (
        f"NOT EXISTS (SELECT 1 FROM {webhooks} w "  # noqa: S608 (names from the models)
        f"WHERE w.{_column(Webhook, 'owner')} = {column('owner')} "
        f"AND w.{_column(Webhook, 'active')})"
    )


@functools.cache
def _start_sql(vendor: str, with_claimer: bool) -> str:
    # `vendor` keys the cache: the quoting is the database's.
    c = bare_column
    sql = (
        f"UPDATE {table()} "  # noqa: S608 (names from the model)
        f"SET {c('started_at')} = %s, {c('worker')} = %s, "
        f"{c('lease_expires_at')} = %s, {c('error')} = NULL "
        f"WHERE {c('id')} = %s AND {c('status')} = %s AND {c('attempts')} = %s "
        f"AND {c('started_at')} IS NULL AND {c('lease_expires_at')} > %s "
        f"AND {_unwatched()}"
    )
    return sql + f" AND {c('claimed_by')} = %s" if with_claimer else sql


@functools.cache
def _complete_sql(vendor: str) -> str:
    c = bare_column
    return (
        f"UPDATE {table()} "  # noqa: S608 (names from the model)
        f"SET {c('status')} = %s, {c('updated_at')} = %s, {c('output')} = %s, "
        f"{c('output_truncated')} = %s, {c('progress')} = 100, {c('finished_at')} = %s, "
        f"{c('lease_expires_at')} = NULL "
        f"WHERE {c('id')} = %s AND {c('status')} = %s AND {c('attempts')} = %s "
        f"AND {c('has_dependants')} = %s AND {_unwatched()}"
    )
