"""Real processes for end-to-end tests: a web server and a qcluster on a
database of their own, driven over HTTP.

The stack mirrors the suite's setup: a fresh SQLite file and the ORM broker
by default; a fresh PostgreSQL database (created and dropped here) and the
Redis broker when the suite runs on PostgreSQL/Redis (`make test-pg`).
E2E_DATABASE_URL, when set, names the database to use instead.

Tests wait by polling with a deadline, never by a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis
import requests
from django.conf import settings
from psycopg import sql

from tests.backends import postgres_params, uses_postgres, uses_redis

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


class Stack:
    """One web server + one qcluster sharing a fresh database."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str] | None = None,
        *,
        web_workers: int = 2,
        web_threads: int = 4,
        worker_class: str = "gthread",
        database_url: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.web_args = ["--workers", str(web_workers), "--worker-class", worker_class]
        if worker_class == "gthread":
            self.web_args += ["--threads", str(web_threads)]
        self.pg_database: str | None = None
        database_url = database_url or os.environ.get("E2E_DATABASE_URL")
        if not database_url and uses_postgres():
            self.pg_database, database_url = _fresh_postgres_database()
        database_url = database_url or f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "DEBUG": "False",
            "SECRET_KEY": "e2e-secret-key-" + uuid.uuid4().hex,
            "DATABASE_URL": database_url,
            # Each stack has its own cluster name, hence its own Redis list.
            "Q_REDIS_URL": settings.Q_REDIS_URL if uses_redis() else "",
            "EXTRA_APPS": "tests.testapp",
            "Q_CLUSTER_NAME": "e2e-" + uuid.uuid4().hex[:8],
            "Q_WORKERS": "2",
            "TASK_DEFAULT_SECONDS": "1",
            "TASK_HEARTBEAT_SECONDS": "0.5",
            "TASK_LEASE_SECONDS": "3",
            "TASK_MAINTENANCE_SECONDS": "0.5",
            "TASK_REQUEUE_AFTER_SECONDS": "5",
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
        self.cluster: subprocess.Popen | None = None
        self._cluster_runs = 0

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

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, users: tuple[str, ...] = ("alice", "bob")) -> Stack:
        self.manage("migrate", "--no-input")
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
        self.start_web()
        self.start_cluster()
        return self

    def start_web(self) -> None:
        self.web = self._spawn(
            "web",
            "-m",
            "gunicorn",
            "config.wsgi:application",
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

    def start_cluster(self) -> None:
        self._cluster_runs += 1
        self.cluster = self._spawn(f"cluster-{self._cluster_runs}", "manage.py", "qcluster")

    def stop_cluster(self, timeout: float = 30) -> None:
        """A clean stop: SIGTERM to the main process only."""
        if self.cluster and self.cluster.poll() is None:
            self.cluster.send_signal(signal.SIGTERM)
            try:
                self.cluster.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_cluster()

    def kill_cluster(self) -> None:
        """What a crash looks like: SIGKILL to every process of the cluster."""
        if self.cluster and self.cluster.poll() is None:
            os.killpg(self.cluster.pid, signal.SIGKILL)
            self.cluster.wait(10)

    def stop(self) -> None:
        self.stop_cluster()
        if self.cluster and self.cluster.poll() is None:
            self.kill_cluster()
        if self.web and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
            try:
                self.web.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.web.pid, signal.SIGKILL)
        if self.env["Q_REDIS_URL"]:
            # Messages left in this stack's own queue (django-q2 names the
            # Redis list after the cluster) would outlive the test otherwise.
            redis.Redis.from_url(self.env["Q_REDIS_URL"]).delete(
                f"django_q:{self.env['Q_CLUSTER_NAME']}:q"
            )
        if self.pg_database:
            _drop_postgres_database(self.pg_database)
            self.pg_database = None

    def log(self, name: str) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob(f"{name}*.log"))
        )

    def all_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

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

    def wait_status(self, session, task_id: int, statuses, timeout: float = 30) -> dict:
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)

        def reached():
            task = self.task(session, task_id)
            return task if task["status"] in statuses else None

        return wait_for(reached, timeout, what=f"task {task_id} to reach {statuses}")
