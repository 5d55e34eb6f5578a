"""Each benchmark runs end to end in a tiny mode, on the suite's database.

The benchmarks are scripts, not tests: this only proves they still work,
that their tables come out and that what they print adds up, so the
README's commands stay true. No figure is compared with a target here.

The selected benchmarks start together, a few at a time, when the first
test needs one: each spends most of its time waiting for the servers and
clusters it starts, so side by side the file takes half as long.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.backends import postgres_params, redis_url, uses_postgres, uses_redis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BACKEND = "PostgreSQL" if uses_postgres() else "SQLite"
AT_ONCE = 3
CHAOS_DATABASE = "chaos_" + uuid.uuid4().hex[:12]


def pg_url(dbname: str) -> str:
    p = postgres_params(dbname)
    auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
    return f"postgres://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{dbname}"


def backend_args() -> list[str]:
    if not uses_postgres():
        return ["--backend", "sqlite"]
    return ["--backend", "pg", "--pg-url", pg_url("postgres")]


def commands() -> dict[str, list[str]]:
    """Each test's benchmark command line, in a tiny mode."""
    chaos_database = ["--database-url", pg_url(CHAOS_DATABASE)] if uses_postgres() else []
    return {
        "test_drain": ["bench.drain", "--tasks", "20", "--rounds", "1", *backend_args()],
        "test_latency": ["bench.latency", "--tasks", "5", *backend_args()],
        "test_submit": [
            "bench.submit",
            *("--seconds", "1", "--rounds", "1", "--users", "2"),
            *("--web-workers", "1", "--client-procs", "1", "--client-threads", "2"),
            *backend_args(),
        ],
        "test_load": [
            "bench.load",
            *("--seconds", "2", "--users", "2", "--client-procs", "1", "--client-threads", "2"),
            *("--web-workers", "1", "--drain-timeout", "120"),
            *backend_args(),
        ],
        "test_growth_with_plans": [
            "bench.growth",
            *("--small", "1000", "--large", "2000", "--repeat", "3", "--drain-tasks", "20"),
            "--explain",
            *backend_args(),
        ],
        "test_fairness": [
            "bench.fairness",
            *("--backlog", "20", "--task-seconds", "0.05", "--samples", "2"),
            *backend_args(),
        ],
        "test_slowclients": [
            "bench.slowclients",
            *("--idle", "4", "--long-polls", "4", "--streams", "6"),
            *("--seconds", "1", "--settle", "0.5", "--timeout", "2", "--open-timeout", "5"),
            *("--web-workers", "1", "--client-procs", "1", "--client-threads", "2"),
            *backend_args(),
        ],
        "test_limits": ["bench.limits", "--tasks", "20", "--rounds", "1", *backend_args()],
        "test_workflows": [
            "bench.workflows",
            *("--batch", "20", "--rounds", "1", "--schedules", "2", "--fires", "4"),
            *backend_args(),
        ],
        "test_celery_comparison": [
            "bench.celery_drain",
            *("--tasks", "20", "--rounds", "1"),
            # Not the cache's database: tests clear the cache, and Celery's
            # queue with it.
            *(["--redis-url", redis_url().rsplit("/", 1)[0] + "/5"] if uses_redis() else []),
            *backend_args(),
        ],
        "test_chaos": [
            "bench.chaos",
            *("--tasks", "30", "--max-sleep", "0.05"),
            *("--stop-seconds", "3", "--lease-seconds", "2"),
            *chaos_database,
        ],
    }


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _skipped(item: pytest.Item) -> bool:
    return any(
        mark.name == "skip" or (mark.name == "skipif" and mark.args and mark.args[0])
        for mark in item.iter_markers()
    )


@pytest.fixture(scope="module")
def runs(request):
    """{test name: the future of its benchmark's run}, for the selected tests."""
    wanted = commands()
    selected = [
        item.name
        for item in request.session.items
        if item.module is sys.modules[__name__] and item.name in wanted and not _skipped(item)
    ]
    if uses_postgres() and "test_chaos" in selected:
        _pg_admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(CHAOS_DATABASE)))
    pool = ThreadPoolExecutor(AT_ONCE)
    futures: dict[str, Future] = {name: pool.submit(_run, wanted[name]) for name in selected}
    try:
        yield futures
    finally:
        pool.shutdown(wait=True)
        if uses_postgres() and "test_chaos" in selected:
            _pg_admin(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(CHAOS_DATABASE)
                )
            )


def _pg_admin(statement) -> None:
    with psycopg.connect(**postgres_params("postgres"), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def out(runs, request) -> str:
    """This test's benchmark's output; it must have succeeded."""
    result = runs[request.node.name].result()
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `text`, as rows of {header: cell}."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            headers = [h.strip() for h in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                rows.append(dict(zip(headers, cells, strict=True)))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def number(cell: str) -> float:
    return float(re.match(r"[-\d.,]+", cell).group().replace(",", ""))


def the_row(text: str) -> dict[str, str]:
    """The one row, for the suite's database, of the first table with a backend column."""
    rows = next(t for t in tables(text) if t and "backend" in t[0])
    assert [r["backend"].split(" (")[0] for r in rows] == [BACKEND]
    return rows[0]


def test_drain(out):
    row = the_row(out)

    stock, project = number(row["stock django-q2 /s"]), number(row["project /s"])
    assert stock > 0 and project > 0
    assert number(row["ratio (target >= 1.0)"]) == pytest.approx(project / stock, rel=0.05)
    assert row["'database is locked'"] == "0"
    assert row["tracebacks"] == "0"


def test_latency(out):
    row = the_row(out)

    for side in ("stock", "project"):
        assert 0 < number(row[f"{side} p50"]) <= number(row[f"{side} p99"])
    assert number(row["ratio p50"]) > 0
    assert row["'database is locked'"] == "0"
    assert row["tracebacks"] == "0"


def test_submit(out):
    row = the_row(out)

    assert number(row["bare insert 2xx/s"]) > 0
    assert number(row["POST /tasks 2xx/s"]) > 0
    assert number(row["ratio (target >= 0.95)"]) > 0
    assert (row["5xx"], row["other errors"], row["'database is locked'"]) == ("0", "0", "0")


def test_load(out):
    row = the_row(out)

    assert number(row["requests"]) > 0
    assert number(row["tasks created"]) == number(row["completed"]) > 0
    assert (row["5xx"], row["not terminal"], row["'database is locked'"]) == ("0", "0", "0")


def test_growth_with_plans(out):
    latency, drains = [t for t in tables(out) if t and "backend" in t[0]]

    assert {r["request"] for r in latency} >= {"GET /tasks (newest 50)", "GET /tasks/{id}"}
    assert all(number(r["p50 @ 1,000"]) > 0 and number(r["p50 @ 2,000"]) > 0 for r in latency)
    assert number(drains[0]["empty /s"]) > 0 and number(drains[0]["2,000 rows /s"]) > 0
    assert "### claim of 2 tasks, no limits" in out
    assert "### POST /tasks (services.submit_task)" in out
    assert "Sequential scans of tasks_task:" in out


def test_fairness(out):
    row = the_row(out)

    assert number(row["task length s"]) > 0
    assert 0 < number(row["delay s"]) <= number(row["worst s"])
    assert row["tracebacks"] == "0"


def test_limits(out):
    row = the_row(out)

    assert number(row["no limits /s"]) > 0
    assert number(row["limits /s"]) > 0
    assert number(row["limits, 100 users /s"]) > 0
    assert row["'database is locked'"] == "0"


def test_workflows(out):
    row = the_row(out)

    assert number(row["batch p50 ms"]) > 0
    assert row["fires"] == "4"
    assert number(row["started p99 ms (target < 1000)"]) >= 0
    assert row["'database is locked'"] == "0"


@pytest.mark.skipif(
    not (uses_postgres() and uses_redis()),
    reason="compares on PostgreSQL, with Celery on Redis: runs under make test-pg",
)
def test_celery_comparison(out):
    row = the_row(out)

    assert number(row["Celery (Redis, prefork) /s"]) > 0
    assert number(row["project (PostgreSQL) /s"]) > 0


def test_chaos(out):
    events = [r["event"] for r in tables(out)[0]]

    assert events[:2] == ["started", "wave 1 submitted"]
    assert {"SIGKILL cluster A", "SIGSTOP cluster B", "SIGCONT cluster B"} <= set(events)
    assert ("terminated backends" in events) == uses_postgres()
    assert out.strip().splitlines()[-1] == (
        "submitted=30 completed=30 failed=0 lost=0 duplicated=0 unrecorded=0 limit_exceeded=0"
    )


def test_slowclients(out):
    rows = next(t for t in tables(out) if t and "tier" in t[0])
    assert [(r["backend"], r["tier"]) for r in rows] == [(BACKEND, "asgi"), (BACKEND, "gthread")]
    asgi = rows[0]
    assert asgi["streams open"] == "6/6"
    assert asgi["/health timeouts"] == "0"
    assert number(asgi["loaded POST /tasks 2xx/s"]) > 0
    assert number(asgi["ratio (target >= 0.95)"]) == pytest.approx(
        number(asgi["loaded POST /tasks 2xx/s"]) / number(asgi["quiet POST /tasks 2xx/s"]),
        rel=0.05,
    )
    assert (
        0
        < number(asgi["loaded /health p50 ms"])
        <= number(asgi["loaded /health p99 ms (target < 100)"])
    )
    assert asgi["tracebacks"] == "0"
