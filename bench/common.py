"""Plumbing shared by the benchmark scripts.

Each script measures one backend per process (Django's settings are global):
`run_backends` re-runs the script once per requested backend with `--child`
and collects the JSON each child prints last. A child gets a database of its
own (a fresh SQLite file, or a fresh PostgreSQL database it drops at the
end), a cluster name of its own (so its Redis list is its own), migrates it,
and may start real gunicorn/qcluster processes through the e2e harness.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {
    "sqlite": "SQLite + ORM broker",
    "pg": "PostgreSQL + Redis",
}
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
PASSWORD = "bench-password-123"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--backend",
        choices=[*BACKENDS, "both"],
        default="both",
        help="sqlite (SQLite + ORM broker), pg (PostgreSQL + Redis), or both (default).",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
        help="A PostgreSQL server to create the bench database on (any database on it).",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for the django-q2 broker in pg mode.",
    )
    p.add_argument(
        "--pg-async-commit",
        action="store_true",
        help="Create the bench database with synchronous_commit=off, to see how much of "
        "a PostgreSQL figure is waiting for the disk (never a production setting here).",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def run_backends(args: argparse.Namespace, argv: list[str]) -> dict[str, dict]:
    """Run this script once per backend in a child process; {backend: its JSON result}."""
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    results = {}
    for backend in backends:
        child_argv = [a for a in argv if not a.startswith("--backend")]
        if "--backend" in argv:  # "--backend X" given as two words
            i = argv.index("--backend")
            child_argv = argv[:i] + argv[i + 2 :]
        command = [sys.executable, "-m", module_of(argv[0]), *child_argv[1:]]
        command += ["--backend", backend, "--child"]
        print(f"# {BACKENDS[backend]} ...", file=sys.stderr, flush=True)
        out = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{backend} run failed (exit {out.returncode})")
        results[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def module_of(script: str) -> str:
    path = Path(script).resolve()
    if path.suffix == ".py":
        return ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return script


class Backend:
    """A fresh database (and broker namespace) for one child run."""

    def __init__(self, args: argparse.Namespace, workdir: Path, **env: str) -> None:
        self.name = args.backend
        self.workdir = workdir
        self.pg_database: str | None = None
        self.pg_url = args.pg_url
        if self.name == "pg":
            self.pg_database = "bench_" + uuid.uuid4().hex[:12]
            self._pg_admin(f'CREATE DATABASE "{self.pg_database}"')
            if args.pg_async_commit:
                self._pg_admin(f'ALTER DATABASE "{self.pg_database}" SET synchronous_commit = off')
            base = self.pg_url.rsplit("/", 1)[0]
            database_url, redis_url = f"{base}/{self.pg_database}", args.redis_url
        else:
            database_url, redis_url = f"sqlite:///{workdir / 'bench.sqlite3'}", ""
        self.env = {
            "DEBUG": "False",
            "SECRET_KEY": "bench-" + secrets.token_urlsafe(40),
            "DATABASE_URL": database_url,
            "Q_REDIS_URL": redis_url,
            "Q_CLUSTER_NAME": "bench-" + uuid.uuid4().hex[:8],
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "EXTRA_APPS": "",
            "LOG_LEVEL": "WARNING",
            # The harness tunes these for tests; benchmarks run the defaults.
            "TASK_HEARTBEAT_SECONDS": "1",
            "TASK_LEASE_SECONDS": "10",
            "TASK_MAINTENANCE_SECONDS": "1",
            "TASK_REQUEUE_AFTER_SECONDS": "30",
            **env,
        }
        os.environ.update(self.env)

        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def _pg_admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(statement)

    def users(self, prefix: str, count: int) -> list:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password

        User = get_user_model()
        hashed = make_password(PASSWORD)
        User.objects.bulk_create(
            [User(username=f"{prefix}{i}", password=hashed) for i in range(count)]
        )
        return list(User.objects.filter(username__startswith=prefix).order_by("id"))

    def stock_broker(self):
        """django-q2's own broker for this backend, as a plain user of it has:
        the raw baseline's. (The project replaces the ORM broker.)"""
        from django_q.brokers import get_broker
        from django_q.brokers.orm import ORM
        from django_q.conf import Conf

        return ORM(list_key=Conf.CLUSTER_NAME) if Conf.ORM else get_broker()

    def stack(self, env: dict[str, str] | None = None, **kwargs):
        from tests.e2e.harness import Stack

        return Stack(
            self.workdir,
            env={**self.env, **(env or {})},
            database_url=self.env["DATABASE_URL"],
            **kwargs,
        )

    def close(self) -> None:
        from django.db import connections

        if self.env["Q_REDIS_URL"]:
            from tasks import queue

            # Messages nobody drained (the submit benchmark runs no cluster).
            queue._broker().delete_queue()
        connections.close_all()
        if self.pg_database:
            self._pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')


def child(args: argparse.Namespace, body: Callable[[Backend], dict], **env: str) -> None:
    """Run `body` on a fresh backend and print its result as the last line."""
    # A terminated run still stops its processes and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        backend = Backend(args, Path(tmp), **env)
        try:
            result = body(backend)
        finally:
            backend.close()
    print(json.dumps(result))


def percentile(values: Iterable[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1]


def table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table (pastes into the README as is)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, rule, *body])


def fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval=0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return value
