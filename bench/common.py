"""Plumbing shared by the benchmark scripts.

Each script measures one database per process (Django's settings are
global): `run_backends` re-runs the script once per requested backend with
`--child` and collects the JSON each child prints last. A child gets a
database of its own (a fresh SQLite file, or a fresh PostgreSQL database it
drops at the end), migrates it, and starts real gunicorn / `manage.py
qcluster` processes (`Stack`) where it needs them.

Two kinds of cluster run on that database: the project's (`bench.settings`,
the project's settings: tasks.cluster.TaskBroker claims task rows) and stock
django-q2's (`bench.stock_settings`: django-q2's own ORM broker and nothing
of the project), the raw baseline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {"sqlite": "SQLite", "pg": "PostgreSQL"}
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench-password-123"
PROJECT_SETTINGS = "bench.settings"
STOCK_SETTINGS = "bench.stock_settings"
# The raw baseline's function: a plain no-op that imports nothing of the project.
RAW_NOOP = "bench.raw.noop"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--backend",
        choices=[*BACKENDS, "both"],
        default="both",
        help="sqlite, pg (PostgreSQL), or both (default), one after the other.",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
        help="A PostgreSQL server to create the bench database on (any database on it); "
        "the bench database is dropped at the end.",
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


def pg_admin(server_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(statement)


class Backend:
    """A fresh database for one child run, migrated, with Django set up on it."""

    def __init__(self, args: argparse.Namespace, workdir: Path, **env: str) -> None:
        self.name = args.backend
        self.workdir = workdir
        self.pg_database: str | None = None
        self.pg_url = args.pg_url
        if self.name == "pg":
            # BENCH_PG_PREFIX: keep runs that share a server apart by name.
            prefix = os.environ.get("BENCH_PG_PREFIX", "bench_")
            self.pg_database = prefix + uuid.uuid4().hex[:12]
            pg_admin(self.pg_url, f'CREATE DATABASE "{self.pg_database}"')
            if args.pg_async_commit:
                pg_admin(
                    self.pg_url, f'ALTER DATABASE "{self.pg_database}" SET synchronous_commit = off'
                )
            database_url = f"{self.pg_url.rsplit('/', 1)[0]}/{self.pg_database}"
        else:
            database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        self.env = {
            "DEBUG": "False",
            "SECRET_KEY": "bench-" + secrets.token_urlsafe(40),
            "DATABASE_URL": database_url,
            "Q_CLUSTER_NAME": "bench-" + uuid.uuid4().hex[:8],
            "DJANGO_SETTINGS_MODULE": PROJECT_SETTINGS,
            "EXTRA_APPS": "",
            # A benchmark measures the database, never a cache it might share.
            "CACHE_URL": "locmemcache://",
            "LOG_LEVEL": "WARNING",
            # The project's defaults, spelled out: a developer's .env must not
            # change what a benchmark measures.
            "TASK_HEARTBEAT_SECONDS": "1",
            "TASK_LEASE_SECONDS": "10",
            "TASK_MAINTENANCE_SECONDS": "1",
            "TASK_MAX_RUNNING_PER_USER": "0",
            "TASK_MAX_UNFINISHED_PER_USER": "1000",
            "Q_POLL": "0.05",
            "Q_QUEUES": "",
            "BENCH_LIMITED_CONCURRENCY": "",
            # Throttles stay on (their cache round trip is part of a request's
            # cost) at rates no benchmark reaches: they would refuse its
            # logins and submits, which are no work done.
            "THROTTLE_LOGIN_IP": "1000000/min",
            "THROTTLE_LOGIN_USERNAME": "1000000/min",
            "THROTTLE_TASK_CREATE": "1000000/min",
            **env,
        }
        os.environ.update(self.env)

        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

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
        """Stock django-q2's ORM broker on this database, as a plain user of
        django-q2 has it: what the raw baseline sends through."""
        from django_q.brokers.orm import ORM
        from django_q.conf import Conf

        return ORM(list_key=Conf.CLUSTER_NAME)

    def stack(self, env: dict[str, str] | None = None, **kwargs) -> Stack:
        return Stack(self.workdir, {**self.env, **(env or {})}, **kwargs)

    def close(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.pg_database:
            pg_admin(self.pg_url, f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')


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


def submit_many(owners: list, count: int, type_name: str = "bench.noop", args=None) -> list[int]:
    """`count` tasks through `services.submit_task`, the owners taking turns
    (so that none reaches the per-user cap on unfinished tasks)."""
    from tasks import services

    return [
        services.submit_task(owner=owners[i % len(owners)], type_name=type_name, args=args).task.pk
        for i in range(count)
    ]


def owners_for(tasks: int) -> int:
    """Owners enough to queue `tasks` tasks below the per-user cap."""
    from django.conf import settings

    cap = settings.TASKS["MAX_UNFINISHED_PER_USER"] or tasks + 1
    return max(1, math.ceil(tasks / max(cap - 1, 1)))


# --- processes -----------------------------------------------------------------------


# What `make serve` runs for each WEB_SERVER (config/gunicorn.conf.py), and
# gunicorn's stock worker classes for comparison.
WORKER_CLASSES = ["asgi", "gthread", "sync"]


def gunicorn_args(worker_class: str, workers: int, threads: int) -> tuple[str, list[str]]:
    """The application and gunicorn's options for `worker_class` ("asgi":
    uvicorn processes over config/asgi.py, as `make serve` runs by default)."""
    if worker_class == "asgi":
        return "config.asgi:application", [
            *("--workers", str(workers)),
            *("--worker-class", "uvicorn_worker.UvicornWorker"),
        ]
    args = ["--workers", str(workers), "--worker-class", worker_class]
    if worker_class == "gthread":
        args += ["--threads", str(threads)]
    return "config.wsgi:application", args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One `manage.py qcluster`, in a process group of its own."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """A clean stop: SIGTERM to the main process only (django-q2 stops its
        workers itself; a signal to the whole group can hang it)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """What a crash looks like: SIGKILL to every process of the cluster."""
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP to every process of the cluster: a frozen host."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def pids(self) -> set[int]:
        """The process ids of the cluster's process group (Linux /proc)."""
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # the process group
                pids.add(int(stat.parent.name))
        return pids


class Stack:
    """Real processes on one database: a gunicorn web server and any number
    of clusters, each started with `env` (plus its own additions), their
    output in `workdir`/logs."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        *,
        web_workers: int = 2,
        web_threads: int = 4,
        worker_class: str = "asgi",
    ) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.app, self.web_args = gunicorn_args(worker_class, web_workers, web_threads)
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.web: subprocess.Popen | None = None
        self.clusters: list[Cluster] = []
        self._logs: list[Path] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None):
        log = self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._logs.append(log)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc, log

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode:
            raise SystemExit(f"manage.py {args[0]} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def start_web(self) -> None:
        import requests

        self.web, log = self._spawn(
            "web",
            [
                "-m",
                "gunicorn",
                self.app,
                "--bind",
                f"127.0.0.1:{self.port}",
                *self.web_args,
            ],
        )

        def up() -> bool:
            if self.web.poll() is not None:
                raise SystemExit("the web server exited:\n" + log.read_text()[-5000:])
            try:
                requests.get(self.base + "/login", timeout=5)
                return True
            except (requests.ConnectionError, requests.Timeout):
                return False

        wait_until(up, 120, "the web server", 0.1)

    def start_cluster(self, env: dict[str, str] | None = None, name: str = "") -> Cluster:
        """Start a qcluster; `env` may name another settings module (the stock one)."""
        name = name or f"cluster-{len(self.clusters) + 1}"
        proc, log = self._spawn(name, ["manage.py", "qcluster"], env)
        cluster = Cluster(name, proc, log)
        self.clusters.append(cluster)
        return cluster

    def stop_clusters(self) -> None:
        for cluster in self.clusters:
            cluster.stop()

    def stop(self) -> None:
        for cluster in self.clusters:
            try:
                cluster.resume()  # a paused cluster cannot stop
            except ProcessLookupError:
                pass
            cluster.stop()
        if self.web and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
            try:
                self.web.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.web.pid, signal.SIGKILL)
                self.web.wait(10)

    def all_logs(self) -> str:
        """The output of this stack's processes."""
        return "".join(p.read_text(errors="replace") for p in self._logs if p.exists())


# --- figures -------------------------------------------------------------------------


def percentile(values: Iterable[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1]


def ratio(numerator: float, denominator: float) -> str:
    if not denominator or numerator != numerator or denominator != denominator:
        return "-"
    value = numerator / denominator
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


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
