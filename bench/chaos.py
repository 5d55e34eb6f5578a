"""Chaos drill: two clusters drain tasks while one is SIGKILLed, the other is
frozen (SIGSTOP) for 30 s while the first runs on, and, on PostgreSQL, every
database connection of the service is terminated; every task must still end
exactly once, and no concurrency limit may ever be exceeded.

    python -m bench.chaos                                         # temporary SQLite file
    python -m bench.chaos --database-url postgres://postgres@127.0.0.1:5432/chaos

It starts gunicorn and two `manage.py qcluster` (the project's settings, a
`bench.settings` of its own) on the database, submits tasks over HTTP in
three waves (`POST /tasks` with an Idempotency-Key, sent again after a
connection error or a 5xx), and after each wave breaks something:

1. SIGKILL to every process of cluster A once half of wave 1 is done, then
   A starts again;
2. SIGSTOP to every process of cluster B once a quarter of wave 2 is done;
   A runs on alone; SIGCONT after --stop-seconds (30);
3. on PostgreSQL, once a quarter of wave 3 is done, pg_terminate_backend of
   every connection to the database but the drill's own, three times a
   second apart.

Two thirds of the tasks are `bench.record`, a third `bench.limited_record`
(a type with `concurrency` --limit): each sleeps up to --max-sleep seconds,
checking for cancellation, then appends `task attempt started finished` to
a file: its side effect. The drill watches the table every 50 ms. When every
task has finished it prints a table of what happened and, last, one line:

    submitted=N completed=C failed=F lost=L duplicated=D unrecorded=U limit_exceeded=X

- lost: tasks still queued or in_progress when the run ends (--timeout);
- duplicated: an attempt's side effect recorded twice (one (task, attempt)
  in two lines);
- unrecorded: completed tasks whose completed attempt recorded no effect;
- limit_exceeded: 1 when more tasks of the limited type were in_progress at
  once than its limit (sampled in the table), or their completed attempts'
  recorded runs overlapped more than that.

The exit status is 1 unless every task completed and all the rest are 0.
A database given with --database-url must be one of the drill's own: it is
migrated and written to (the drill counts only the tasks it submitted).
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: python bench/chaos.py
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

TERMINAL = ("completed", "failed", "cancelled")
USERS = ("alice", "bob", "carol")
PASSWORD = "chaos-password-123"
LIMITED = "bench.limited_record"
# The drill's own connections, which it never terminates.
APPLICATION_NAME = "bench-chaos"


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Db:
    """Read-only looks at the service's rows, without Django; reconnects after
    an error (the drill terminates connections on purpose)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgres:", "postgresql:"))
        self.conn = None

    def _connect(self):
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=True, application_name=APPLICATION_NAME)
        path = self.url.removeprefix("sqlite:///")
        # The busy timeout rides out the workers' writes.
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.postgres:
            sql = sql.replace("%s", "?")
        for attempt in range(5):
            try:
                if self.conn is None:
                    self.conn = self._connect()
                return list(self.conn.execute(sql, params).fetchall())
            except Exception:
                self.close()
                if attempt == 4:
                    raise
                time.sleep(0.2)
        return []

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # a terminated connection may fail to close too
                pass
        self.conn = None


class Watch(threading.Thread):
    """Samples, every 50 ms, how many limited tasks are in_progress (claimed)
    and how many of those have started."""

    def __init__(self, url: str) -> None:
        super().__init__(name="chaos-watch", daemon=True)
        self.db = Db(url)
        self.stopping = threading.Event()
        self.most_claimed = 0
        self.most_started = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                claimed, started = self.db.query(
                    "SELECT COUNT(*), COUNT(started_at) FROM tasks_task "
                    "WHERE status = 'in_progress' AND type = %s",
                    (LIMITED,),
                )[0]
            except Exception:
                claimed = started = 0
            self.most_claimed = max(self.most_claimed, claimed)
            self.most_started = max(self.most_started, started)
            self.samples += 1
            self.stopping.wait(0.05)
        self.db.close()


class Drill:
    def __init__(self, options, stack: common.Stack, db: Db) -> None:
        self.options = options
        self.stack = stack
        self.db = db
        self.ids: list[int] = []
        self.resubmits = 0
        self.events: list[list] = []
        self.started = time.monotonic()
        self.deadline = self.started + options.timeout

    # --- reading the table ---------------------------------------------------

    def statuses(self) -> dict[int, str]:
        wanted = set(self.ids)
        return {
            pk: s for pk, s in self.db.query("SELECT id, status FROM tasks_task") if pk in wanted
        }

    def finished(self, ids: list[int]) -> int:
        wanted = set(ids)
        rows = self.db.query(
            "SELECT id FROM tasks_task WHERE status IN ('completed', 'failed', 'cancelled')"
        )
        return sum(1 for (pk,) in rows if pk in wanted)

    def wait_finished(self, ids: list[int], at_least: int) -> bool:
        while self.finished(ids) < at_least:
            if time.monotonic() > self.deadline:
                return False
            time.sleep(0.1)
        return True

    def held_by(self, cluster: common.Cluster) -> tuple[int, int]:
        """(claimed, started) tasks held by the processes of `cluster`."""
        pids = {str(pid) for pid in cluster.pids()}
        claimed = started = 0
        for claimed_by, worker in self.db.query(
            "SELECT claimed_by, worker FROM tasks_task WHERE status = 'in_progress'"
        ):
            if worker and worker.split(":")[1] in pids:
                started += 1
            elif claimed_by and claimed_by.split(":")[1] in pids:
                claimed += 1
        return claimed, started

    def event(self, what: str, detail: str) -> None:
        at = time.monotonic() - self.started
        done = self.finished(self.ids)
        self.events.append([f"{at:.1f}", what, f"{done}/{len(self.ids)}", detail])
        note(f"{at:6.1f}s {what}: {detail} ({done}/{len(self.ids)} finished)")

    # --- submitting ----------------------------------------------------------

    def wave(self, sessions: list[requests.Session], count: int) -> list[int]:
        rng = random.Random(len(self.ids))

        def one(i: int) -> int:
            kind = LIMITED if i % 3 == 2 else "bench.record"
            body = {
                "type": kind,
                "args": {"seconds": round(rng.uniform(0, self.options.max_sleep), 3)},
            }
            return self.submit(sessions[i % len(sessions)], body)

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(one, range(count)))
        self.ids += ids
        return ids

    def submit(self, session: requests.Session, body: dict) -> int:
        # The same key every time: a submit that reached the database before
        # its answer was lost returns the same task instead of a second one.
        key = uuid.uuid4().hex
        for attempt in range(10):
            try:
                response = session.post(
                    self.stack.base + "/tasks",
                    json=body,
                    headers={"Idempotency-Key": key},
                    timeout=30,
                )
            except requests.RequestException:
                response = None
            if response is not None and response.status_code in (200, 202):
                return response.json()["task_id"]
            if response is not None and response.status_code < 500:
                raise SystemExit(f"submit refused: {response.status_code} {response.text}")
            self.resubmits += 1
            time.sleep(0.2 * (attempt + 1))
        raise SystemExit("a submit failed 10 times")

    # --- breaking things -------------------------------------------------------

    def kill(self, cluster: common.Cluster) -> common.Cluster:
        claimed, started = self.held_by(cluster)
        cluster.kill()
        self.event("SIGKILL cluster A", f"it held {claimed} claimed and {started} running tasks")
        time.sleep(0.5)  # a crashed host does not come back at once
        restarted = self.stack.start_cluster(name="cluster-a-restarted")
        self.event("cluster A restarted", "")
        return restarted

    def freeze(self, cluster: common.Cluster) -> None:
        claimed, started = self.held_by(cluster)
        cluster.pause()
        self.event(
            "SIGSTOP cluster B",
            f"it held {claimed} claimed and {started} running tasks; cluster A runs on",
        )
        before = self.finished(self.ids)
        time.sleep(self.options.stop_seconds)
        # A frozen process holding a lock others wait for would show here: a
        # cluster A that finished nothing meanwhile although work was left.
        meanwhile = self.finished(self.ids) - before
        cluster.resume()
        self.event(
            "SIGCONT cluster B",
            f"after {self.options.stop_seconds:g} s, in which {meanwhile} tasks finished",
        )

    def terminate_backends(self) -> None:
        for round_ in range(3):
            killed = self.db.query(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name <> %s",
                (APPLICATION_NAME,),
            )[0][0]
            self.event("terminated backends", f"round {round_ + 1}: {killed} connections")
            time.sleep(1)

    # --- the verdict -----------------------------------------------------------

    def records(self) -> list[tuple[int, int, float, float]]:
        path = Path(self.stack.env["BENCH_RECORD_FILE"])
        lines = path.read_text().splitlines() if path.exists() else []
        out = []
        for line in lines:
            task, attempt, started, finished = line.split()
            out.append((int(task), int(attempt), float(started), float(finished)))
        return out


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in points:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    return most


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="The database to run on (default: a temporary SQLite file). A PostgreSQL "
        "database must be one of the drill's own.",
    )
    parser.add_argument("--tasks", type=int, default=300, help="Tasks in all (three waves).")
    parser.add_argument("--workers", type=int, default=2, help="Workers per cluster.")
    parser.add_argument("--limit", type=int, default=2, help="Concurrency of the limited type.")
    parser.add_argument(
        "--max-sleep", type=float, default=0.5, help="Longest a task sleeps (seconds)."
    )
    parser.add_argument(
        "--stop-seconds", type=float, default=30, help="How long cluster B stays frozen."
    )
    parser.add_argument(
        "--lease-seconds", type=float, default=10, help="TASK_LEASE_SECONDS (the default)."
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="Give up waiting after this many seconds."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory.")
    options = parser.parse_args(argv[1:])

    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    database_url = options.database_url or f"sqlite:///{workdir / 'chaos.sqlite3'}"
    db = Db(database_url)
    env = {
        "DEBUG": "False",
        "SECRET_KEY": "chaos-" + secrets.token_urlsafe(40),
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": common.PROJECT_SETTINGS,
        "EXTRA_APPS": "",
        "CACHE_URL": "locmemcache://",
        "LOG_LEVEL": "WARNING",
        "Q_CLUSTER_NAME": "chaos-" + uuid.uuid4().hex[:8],
        "Q_WORKERS": str(options.workers),
        "Q_QUEUES": "",
        "TASK_LEASE_SECONDS": str(options.lease_seconds),
        "TASK_HEARTBEAT_SECONDS": str(min(1.0, options.lease_seconds / 4)),
        "TASK_MAINTENANCE_SECONDS": "1",
        "TASK_MAX_RUNNING_PER_USER": "0",
        # Quick retries after a lost worker, so the drill ends soon after.
        "TASK_RETRY_BACKOFF_BASE": "0.5",
        "BENCH_LIMITED_CONCURRENCY": str(options.limit),
        "BENCH_RECORD_FILE": str(workdir / "records.txt"),
        "THROTTLE_LOGIN_IP": "1000000/min",
        "THROTTLE_LOGIN_USERNAME": "1000000/min",
        "THROTTLE_TASK_CREATE": "1000000/min",
    }
    stack = common.Stack(workdir, env)
    watch = Watch(database_url)
    drill = Drill(options, stack, db)
    try:
        stack.manage("migrate", "--no-input")
        stack.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; User = get_user_model(); "
            + "".join(
                f"User.objects.filter(username={u!r}).exists() or "
                f"User.objects.create_user({u!r}, password={PASSWORD!r}); "
                for u in USERS
            ),
        )
        stack.start_web()
        cluster_a = stack.start_cluster(name="cluster-a")
        cluster_b = stack.start_cluster(name="cluster-b")
        sessions = []
        for user in USERS:
            response = requests.post(
                stack.base + "/login", json={"username": user, "password": PASSWORD}, timeout=30
            )
            response.raise_for_status()
            session = requests.Session()
            session.headers["Authorization"] = "Bearer " + response.json()["Token"]
            sessions.append(session)
        watch.start()
        drill.event("started", f"{'PostgreSQL' if db.postgres else 'SQLite'}, 2 clusters")
        per_wave = max(options.tasks // 3, 1)
        sizes = [per_wave, per_wave, options.tasks - 2 * per_wave]

        wave = drill.wave(sessions, sizes[0])
        drill.event("wave 1 submitted", f"{len(wave)} tasks")
        drill.wait_finished(wave, len(wave) // 2)
        cluster_a = drill.kill(cluster_a)

        wave = drill.wave(sessions, sizes[1])
        drill.event("wave 2 submitted", f"{len(wave)} tasks")
        drill.wait_finished(wave, len(wave) // 4)
        drill.freeze(cluster_b)

        wave = drill.wave(sessions, sizes[2])
        drill.event("wave 3 submitted", f"{len(wave)} tasks")
        if db.postgres:
            drill.wait_finished(wave, len(wave) // 4)
            drill.terminate_backends()

        all_done = drill.wait_finished(drill.ids, len(drill.ids))
        drill.event("all finished" if all_done else "gave up waiting", "")
        statuses = drill.statuses()
        attempts = dict(db.query("SELECT id, attempts FROM tasks_task"))
        types = dict(db.query("SELECT id, type FROM tasks_task"))
        failed_errors = db.query("SELECT id, error FROM tasks_task WHERE status = 'failed'")
        lost_attempts = db.query(
            "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM tasks_taskattempt WHERE outcome = 'lost'"
        )[0]
        records = drill.records()
    finally:
        watch.stopping.set()
        stack.stop()
        db.close()
        logs = stack.all_logs()
        if options.keep:
            note(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    counts = Counter(statuses.values())
    lost = sum(n for status, n in counts.items() if status not in TERMINAL)
    per_attempt = Counter((task, attempt) for task, attempt, _, _ in records)
    duplicated = [pair for pair, n in per_attempt.items() if n > 1]
    completed = [pk for pk, status in statuses.items() if status == "completed"]
    unrecorded = [pk for pk in completed if (pk, attempts[pk]) not in per_attempt]
    # The runs of the limited type's completed attempts, as they recorded them.
    final = {(pk, attempts[pk]) for pk in completed if types[pk] == LIMITED}
    overlap = most_at_once([(s, f) for t, a, s, f in records if (t, a) in final])
    exceeded = watch.most_claimed > options.limit or overlap > options.limit

    for task, attempt in duplicated:
        note(f"recorded twice: task {task} attempt {attempt}")
    for pk in unrecorded:
        note(f"completed without its effect: task {pk} attempt {attempts[pk]}")
    for pk, error in failed_errors[:5]:
        note(f"failed: task {pk}: {error}")

    print(f"\nChaos drill on {'PostgreSQL' if db.postgres else 'SQLite'}\n")
    print(common.table(["at s", "event", "finished", "detail"], drill.events))
    print()
    print(
        common.table(
            ["what", "seen", "allowed"],
            [
                ["limited tasks in_progress at once (sampled)", watch.most_claimed, options.limit],
                ["limited tasks started at once (sampled)", watch.most_started, options.limit],
                ["completed limited attempts running at once (recorded)", overlap, options.limit],
                ["attempts ended as lost (tasks)", f"{lost_attempts[0]} ({lost_attempts[1]})", "-"],
                ["submits sent again", drill.resubmits, "-"],
                ["tracebacks in the logs", logs.count("Traceback"), "-"],
                ["'database is locked' in the logs", logs.count("database is locked"), "-"],
            ],
        )
    )
    print(
        f"\nsubmitted={len(drill.ids)} completed={counts.get('completed', 0)} "
        f"failed={counts.get('failed', 0)} lost={lost} duplicated={len(duplicated)} "
        f"unrecorded={len(unrecorded)} limit_exceeded={int(exceeded)}",
        flush=True,
    )
    ok = counts.get("completed", 0) == len(drill.ids) and not (
        lost or duplicated or unrecorded or exceeded
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
