"""Real processes for end-to-end tests: a web server and any number of
qclusters on a database of their own, driven over HTTP.

The stack mirrors the suite's setup: a fresh SQLite file by default; a fresh
PostgreSQL database (created and dropped here) when the suite runs on
PostgreSQL (`make test-pg`). E2E_DATABASE_URL, when set, names the database
to use instead. The task table is the only queue, so every cluster of a
stack serves the same tasks; each may have environment overrides of its own
(`Q_QUEUES`, `Q_WORKERS`, ...).

A cluster runs in a process group of its own (its main process, sentinel,
pusher, monitor and workers), so a test can stop, pause or kill it whole, or
kill one worker process.

Tests wait by polling with a deadline, never by a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import environ
import psycopg
import requests
from psycopg import sql

from bench.common import gunicorn_args
from tests.backends import postgres_params, uses_postgres

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "e2e-password-123"
# Generous: a request that takes this long on a loaded machine is slow, not broken.
HTTP_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1, what=""):
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def process_group(pgid: int) -> set[int]:
    """Pids of the live processes in process group `pgid`."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The fields after the command name (in parentheses): state, ppid, pgrp.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(entry.name))
    return members


def pid_of(worker: str) -> int:
    """The pid in a worker name (`host:pid`, as tasks record it)."""
    return int(worker.rsplit(":", 1)[1])


def _fresh_postgres_database() -> tuple[str, str]:
    """Create an empty database on the suite's PostgreSQL server: (name, URL)."""
    name = "e2e_" + uuid.uuid4().hex[:12]
    params = postgres_params("postgres")
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    auth = quote(params.get("user", ""), safe="")
    if params.get("password"):
        auth += ":" + quote(params["password"], safe="")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", 5432)
    return name, f"postgres://{auth}@{host}:{port}/{name}"


def _drop_postgres_database(name: str) -> None:
    with psycopg.connect(**postgres_params("postgres"), autocommit=True) as conn:
        # FORCE: a killed worker's connection may linger for a moment.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class Cluster:
    """One `manage.py qcluster` of a stack, in a process group of its own."""

    def __init__(self, stack: Stack, number: int, env: dict[str, str]) -> None:
        self.stack = stack
        self.name = f"cluster-{number}"
        self.env = {
            **stack.env,
            # django-q2 keys its statistics by cluster name.
            "Q_CLUSTER_NAME": f"e2e-{uuid.uuid4().hex[:8]}",
            **env,
        }
        self.process = stack.spawn(self.name, "manage.py", "qcluster", env=self.env)
        self.paused = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> set[int]:
        """Every live process of the cluster (the group is the main process's pid)."""
        return process_group(self.pid) if self.alive() else set()

    def runs(self, pid: int) -> bool:
        return pid in self.pids()

    def worker_pids(self) -> set[int]:
        """Its worker processes: the ones that record heartbeats."""
        beating = {pid for (pid,) in self.stack.db("SELECT pid FROM tasks_workerheartbeat")}
        return beating & self.pids()

    def wait_workers(self, count: int, timeout: float = 60) -> set[int]:
        def beating():
            pids = self.worker_pids()
            return pids if len(pids) >= count else None

        return wait_for(
            beating,
            timeout,
            what=f"{count} worker processes of {self.name} to beat",
        )

    def stop(self, timeout: float = 30) -> None:
        """A clean stop: SIGTERM to the main process only."""
        if not self.alive():
            return
        self.resume()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """What a crash looks like: SIGKILL to every process of the cluster."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(10)
        self.paused = False

    def pause(self, pids: set[int] | None = None) -> None:
        """SIGSTOP the whole cluster (or only `pids`, some of its processes):
        what a frozen VM or a long stall looks like.

        Never while a stopped process holds a database lock: frozen inside a
        write it would stall every other process (all SQLite writers, or
        PostgreSQL's waiters on its locks), which is a different test.
        """
        if pids is not None:
            assert pids <= self.pids(), f"{pids} are not all processes of {self.name}"

        def send(sig):
            if pids is None:
                os.killpg(self.pid, sig)
            else:
                for pid in pids:
                    os.kill(pid, sig)

        for _ in range(20):
            send(signal.SIGSTOP)
            if not self.stack.lock_held():
                self.paused = pids is None
                return
            send(signal.SIGCONT)
        raise AssertionError(f"{self.name} always held a database lock when stopped")

    def resume(self, pids: set[int] | None = None) -> None:
        if pids is not None:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        elif self.paused and self.alive():
            os.killpg(self.pid, signal.SIGCONT)
        self.paused = False

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker process (django-q2 replaces it)."""
        assert pid in self.pids(), f"{pid} is not a process of {self.name}"
        os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        return self.stack.log(self.name)


class Stack:
    """One web server + clusters sharing a fresh database."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str] | None = None,
        *,
        web_workers: int = 2,
        web_threads: int = 4,
        # What `make serve` runs (WEB_SERVER=asgi); "gthread" for the WSGI tier.
        worker_class: str = "asgi",
        database_url: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.app, self.web_args = gunicorn_args(worker_class, web_workers, web_threads)
        self.pg_database: str | None = None
        database_url = database_url or os.environ.get("E2E_DATABASE_URL")
        if not database_url and uses_postgres():
            self.pg_database, database_url = _fresh_postgres_database()
        database_url = database_url or f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
        self.database = environ.Env.db_url_config(database_url)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "DEBUG": "False",
            "SECRET_KEY": "e2e-secret-key-" + uuid.uuid4().hex,
            "DATABASE_URL": database_url,
            "EXTRA_APPS": "tests.testapp",
            "Q_WORKERS": "2",
            "TASK_DEFAULT_SECONDS": "1",
            "TASK_HEARTBEAT_SECONDS": "0.5",
            "TASK_LEASE_SECONDS": "3",
            "TASK_MAINTENANCE_SECONDS": "0.5",
            "TASK_RETRY_BACKOFF_BASE": "0.5",
            "TEST_RECORD_FILE": str(tmp_path / "records.txt"),
            # Tests that submit many tasks or log in often must not meet 429s.
            "THROTTLE_LOGIN_IP": "10000/min",
            "THROTTLE_LOGIN_USERNAME": "10000/min",
            "THROTTLE_TASK_CREATE": "10000/min",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **(env or {}),
        }
        self.web: subprocess.Popen | None = None
        self.clusters: list[Cluster] = []
        self._cluster_runs = 0
        self._db: sqlite3.Connection | psycopg.Connection | None = None

    @property
    def cluster(self) -> Cluster | None:
        """The cluster started last."""
        return self.clusters[-1] if self.clusters else None

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, users: tuple[str, ...] = ("alice", "bob"), *, cluster: bool = True) -> Stack:
        self.manage("migrate", "--no-input")
        self.add_users(*users)
        self.start_web()
        if cluster:
            self.start_cluster()
        return self

    def add_users(self, *users: str) -> None:
        script = "".join(
            f"User.objects.filter(username={u!r}).exists() or "
            f"User.objects.create_user({u!r}, password={PASSWORD!r});"
            for u in users
        )
        self.manage(
            "shell",
            "-c",
            f"from django.contrib.auth import get_user_model; User = get_user_model(); {script}",
        )

    def start_web(self) -> None:
        self.web = self.spawn(
            "web",
            "-m",
            "gunicorn",
            self.app,
            "--bind",
            f"127.0.0.1:{self.port}",
            *self.web_args,
            "--access-logfile",
            "-",
        )
        wait_for(self._web_up, 60, what="the web server")

    def _web_up(self) -> bool:
        try:
            requests.get(self.base + "/login", timeout=5)
            return True
        # A busy machine may accept the connection but answer slowly while
        # gunicorn boots: that is "not up yet", not a failure.
        except (requests.ConnectionError, requests.Timeout):
            if self.web and self.web.poll() is not None:
                raise AssertionError("web server exited:\n" + self.log("web")) from None
            return False

    def start_cluster(self, env: dict[str, str] | None = None) -> Cluster:
        """Start one more cluster on the stack's database, with `env` over the stack's."""
        self._cluster_runs += 1
        cluster = Cluster(self, self._cluster_runs, env or {})
        self.clusters.append(cluster)
        return cluster

    def stop_cluster(self, timeout: float = 30) -> None:
        if self.cluster:
            self.cluster.stop(timeout)

    def kill_cluster(self) -> None:
        if self.cluster:
            self.cluster.kill()

    def stop(self) -> None:
        for cluster in self.clusters:
            cluster.stop()
        if self.web and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
            try:
                self.web.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.web.pid, signal.SIGKILL)
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.pg_database:
            _drop_postgres_database(self.pg_database)
            self.pg_database = None

    def log(self, name: str) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob(f"{name}*.log"))
        )

    def all_logs(self, tail: int | None = None) -> str:
        """Every process's log (the last `tail` characters of each), headed by its name."""
        return "".join(
            f"==> {p.name} <==\n" + p.read_text(errors="replace")[-(tail or 0) :]
            for p in sorted(self.logs.glob("*.log"))
        )

    # --- The database, read directly ---------------------------------------

    @property
    def is_postgres(self) -> bool:
        return self.database["ENGINE"] == "django.db.backends.postgresql"

    def _pg_params(self, dbname: str | None = None) -> dict:
        return postgres_params(dbname, database=self.database)

    def db(self, query: str, params: tuple | list = ()) -> list[tuple]:
        """Run one statement (%s placeholders) on the stack's database from a
        connection of the test's own, in autocommit: it sees every commit.
        Returns the rows, if the statement has any."""
        if self.is_postgres:
            if self._db is None or self._db.closed:
                self._db = psycopg.connect(**self._pg_params(), autocommit=True)
            cursor = self._db.execute(query, params)
        else:
            if self._db is None:
                self._db = sqlite3.connect(self.database["NAME"], timeout=30, isolation_level=None)
            cursor = self._db.execute(query.replace("%s", "?"), params)
        return cursor.fetchall() if cursor.description else []

    def lock_held(self, patience: float = 2) -> bool:
        """Whether some process keeps a write lock (SQLite) or a transaction
        (PostgreSQL) open on the database for `patience` seconds, as only a
        stopped one would."""
        if self.is_postgres:
            # The same transaction still open after `patience`: other
            # processes' short transactions come and go meanwhile.
            query = (
                "SELECT pid, xact_start FROM pg_stat_activity WHERE datname = %s "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'"
            )
            held = set(self.db(query, [self.database["NAME"]]))
            deadline = time.monotonic() + patience
            while held and time.monotonic() < deadline:
                time.sleep(0.05)
                held &= set(self.db(query, [self.database["NAME"]]))
            return bool(held)
        probe = sqlite3.connect(self.database["NAME"], timeout=patience, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()

    def terminate_backends(self) -> int:
        """PostgreSQL: end every server process connected to the stack's
        database (web, clusters, workers, listeners), as a failover or an
        administrator would; return how many."""
        assert self.is_postgres, "only PostgreSQL has backends to terminate"
        with psycopg.connect(**self._pg_params("postgres"), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.database["NAME"]],
            ).fetchall()
        if self._db is not None and not self._db.closed:
            self._db.close()  # one of them was ours
        return sum(1 for (ok,) in rows if ok)

    # --- HTTP -------------------------------------------------------------

    def login(self, username: str = "alice") -> requests.Session:
        response = requests.post(
            self.base + "/login",
            json={"username": username, "password": PASSWORD},
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + response.json()["Token"]
        return session

    def submit(self, session: requests.Session, type_: str, args=None, **extra) -> int:
        response = session.post(
            self.base + "/tasks",
            json={"type": type_, "args": args or {}, **extra},
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 202, response.text
        return response.json()["task_id"]

    def task(self, session: requests.Session, task_id: int) -> dict:
        response = session.get(f"{self.base}/tasks/{task_id}", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()

    def cancel(self, session: requests.Session, task_id: int) -> dict:
        response = session.post(f"{self.base}/tasks/{task_id}/cancel", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, session, task_id: int, statuses, timeout: float = 30) -> dict:
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)

        def reached():
            task = self.task(session, task_id)
            return task if task["status"] in statuses else None

        return wait_for(reached, timeout, what=f"task {task_id} to reach {statuses}")

    def wait_started(self, session, task_id: int, timeout: float = 30) -> dict:
        """Wait until a worker has started the task (not merely claimed it)."""

        def started():
            task = self.task(session, task_id)
            return task if task["status"] == "in_progress" and task["started_at"] else None

        return wait_for(started, timeout, what=f"task {task_id} to start")
