"""Each benchmark script runs end to end in a tiny mode, on the suite's setup.

The benchmarks are scripts, not tests: this only proves they still work
(and that their tables come out), so the README's commands stay true.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.backends import postgres_params, uses_postgres, uses_redis

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "drain": ["--tasks", "20", "--rounds", "1"],
    "latency": ["--tasks", "5"],
    "submit": ["--seconds", "1", "--rounds", "1", "--users", "2", "--client-threads", "2"],
    "load": ["--seconds", "3", "--users", "2", "--client-threads", "2", "--drain-timeout", "120"],
    "growth": ["--small", "1000", "--large", "3000", "--repeat", "3"],
}


def backend_args() -> list[str]:
    if not uses_postgres():
        return ["--backend", "sqlite"]
    p = postgres_params("postgres")
    user = p.get("user", "postgres")
    pg_url = f"postgres://{user}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/postgres"
    return ["--backend", "pg", "--pg-url", pg_url, "--redis-url", settings.Q_REDIS_URL]


def run_table(module: str, *args: str) -> str:
    """Run a benchmark module; its output, which must end in a table."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args, *backend_args()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| backend" in result.stdout
    return result.stdout


@pytest.mark.parametrize("script", sorted(TINY))
def test_the_benchmark_runs_in_a_tiny_mode(script):
    out = run_table(f"bench.{script}", *TINY[script])
    assert "ratio" in out or "req/s" in out


# Celery needs Redis and the comparison runs on PostgreSQL: it runs under
# `make test-pg`, and skips on the SQLite + ORM broker setup.
@pytest.mark.skipif(
    not (uses_postgres() and uses_redis()), reason="PostgreSQL + Redis only (make test-pg)"
)
def test_the_celery_comparison_runs_in_a_tiny_mode():
    assert "ratio project/Celery" in run_table("bench.celery_drain", "--tasks", "20")


def test_the_chaos_drill_runs_in_a_tiny_mode():
    args = ["--tasks", "30", "--max-sleep", "0.05", "--timeout", "300"]
    if settings.Q_REDIS_URL:
        args += ["--redis", settings.Q_REDIS_URL]
    result = subprocess.run(
        [sys.executable, "bench/chaos.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("submitted=30 completed=30 ")
    assert last.endswith(" lost=0 duplicated=0")
