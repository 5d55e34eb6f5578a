"""Chaos run: submit a few hundred tasks, SIGKILL the whole cluster twice
mid-run, restart it, and check that every task ends exactly once.

    python bench/chaos.py                      # ORM broker, temporary SQLite
    python bench/chaos.py --redis redis://127.0.0.1:6379/7

It starts its own web server and qcluster (the end-to-end test harness) on
a temporary SQLite database, submits `test.record` tasks over HTTP (each
appends `task:attempt` to a file once it has run), and ends with one line:

    submitted=N completed=C failed=F lost=L duplicated=D

lost: tasks not finished when the run ends. duplicated: a `task:attempt`
recorded twice, or a task with more than one completed attempt. The exit
status is 1 when either is not 0.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

from tests.e2e.harness import Stack  # noqa: E402

TERMINAL = ("completed", "failed", "cancelled")


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Chaos:
    def __init__(self, stack: Stack, db_path: Path) -> None:
        self.stack = stack
        self.db_path = db_path

    def query(self, sql: str, params=()) -> list[tuple]:
        # Read-only look at the service's own rows; the busy timeout rides out
        # the workers' writes.
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def counts(self) -> dict[str, int]:
        return dict(self.query("SELECT status, COUNT(*) FROM tasks_task GROUP BY status"))

    def finished(self) -> int:
        counts = self.counts()
        return sum(counts.get(s, 0) for s in TERMINAL)

    def wait_finished(self, at_least: int, deadline: float) -> bool:
        while self.finished() < at_least:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def kill_and_restart(self, number: int, pause: float) -> None:
        running = self.counts().get("in_progress", 0)
        self.stack.kill_cluster()
        note(f"kill {number}: SIGKILL to the cluster's process group ({running} running)")
        time.sleep(pause)  # a crashed host does not come back at once
        self.stack.start_cluster()
        note(f"kill {number}: cluster restarted")

    def duplicated(self, record_file: Path) -> int:
        lines = record_file.read_text().split() if record_file.exists() else []
        twice = [line for line, n in Counter(lines).items() if n > 1]
        completed_twice = self.query(
            "SELECT task_id FROM tasks_taskattempt WHERE outcome = 'completed' "
            "GROUP BY task_id HAVING COUNT(*) > 1"
        )
        for line in twice:
            note(f"recorded twice: {line}")
        for (task_id,) in completed_twice:
            note(f"completed twice: task {task_id}")
        return len(twice) + len(completed_twice)


def submit_all(stack: Stack, count: int, max_sleep: float) -> list[int]:
    sessions = [stack.login("alice"), stack.login("bob")]

    def submit(i: int) -> int:
        seconds = round(random.uniform(0, max_sleep), 3)
        return stack.submit(sessions[i % 2], "test.record", {"seconds": seconds})

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(submit, range(count)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="How many tasks to submit.")
    parser.add_argument("--redis", metavar="URL", help="Use the Redis broker at URL.")
    parser.add_argument("--workers", type=int, default=2, help="django-q2 workers.")
    parser.add_argument(
        "--max-sleep", type=float, default=0.2, help="Longest a task sleeps (seconds)."
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="Give up waiting after this many seconds."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory.")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    db_path = workdir / "chaos.sqlite3"
    env = {
        "DATABASE_URL": f"sqlite:///{db_path}",
        "Q_WORKERS": str(options.workers),
        "LOG_LEVEL": "WARNING",
    }
    forget_redis = None
    if options.redis:
        import redis

        client = redis.Redis.from_url(options.redis, socket_connect_timeout=2)
        client.ping()
        name = "chaos-" + uuid.uuid4().hex[:8]
        env.update(Q_REDIS_URL=options.redis, Q_CLUSTER_NAME=name)

        def forget_redis():
            for key in client.scan_iter(match=f"django_q:{name}:*"):
                client.delete(key)

        forget_redis()

    # The harness reads the project's settings (which database and broker the
    # suite runs on); this script chooses them itself, so configure Django to
    # match before building the stack.
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=env["DATABASE_URL"],
        Q_REDIS_URL=options.redis or "",
    )
    os.environ.setdefault("SECRET_KEY", "chaos-" + uuid.uuid4().hex * 2)
    django.setup()
    stack = Stack(workdir, env=env, database_url=env["DATABASE_URL"])
    record_file = Path(stack.env["TEST_RECORD_FILE"])
    chaos = Chaos(stack, db_path)
    started = time.monotonic()
    try:
        stack.start()
        broker = "redis" if options.redis else "orm"
        note(f"stack up ({broker} broker, {options.workers} workers) in {workdir}")
        ids = submit_all(stack, options.tasks, options.max_sleep)
        note(f"submitted {len(ids)} tasks in {time.monotonic() - started:.1f}s")
        deadline = time.monotonic() + options.timeout
        for number, fraction in enumerate((1 / 3, 2 / 3), start=1):
            chaos.wait_finished(int(len(ids) * fraction), deadline)
            chaos.kill_and_restart(number, pause=0.5)
        all_done = chaos.wait_finished(len(ids), deadline)
        elapsed = time.monotonic() - started
        note(f"{'all finished' if all_done else 'gave up waiting'} after {elapsed:.1f}s")

        counts = chaos.counts()
        lost = sum(n for status, n in counts.items() if status not in TERMINAL)
        duplicated = chaos.duplicated(record_file)
        recovered = chaos.query(
            "SELECT COUNT(DISTINCT task_id) FROM tasks_taskattempt WHERE outcome = 'lost'"
        )[0][0]
        resends = stack.log("cluster").count("queued tasks whose messages were lost")
        note(f"tasks recovered from a killed worker: {recovered}; lost-message resends: {resends}")
        if counts.get("cancelled"):
            note(f"cancelled (nobody asked): {counts['cancelled']}")
    finally:
        stack.stop()
        if forget_redis:
            forget_redis()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"submitted={len(ids)} completed={counts.get('completed', 0)} "
        f"failed={counts.get('failed', 0)} lost={lost} duplicated={duplicated}",
        flush=True,
    )
    return 0 if lost == 0 and duplicated == 0 and not counts.get("cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
