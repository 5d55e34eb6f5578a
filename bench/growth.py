"""Growth: what a big task table costs. The API's list, status, detail and
submit latency with 10,000 versus 1,000,000 finished task rows in the table,
and drain throughput with an empty table versus with those 1,000,000 rows.

Rows are bulk-inserted in SQL (100 owners; the measured user owns 1% of
them, so their own history grows 100x too; 1 in 10 failed, the rest
completed). Requests go through the whole Django/DRF stack in-process (no
HTTP), so the figures are the view and its queries. Drains are
`bench.drain`'s project mode (submit_task, then a qcluster drains).

The event reads are timed too: a poll of a user's stream (`/events`,
`tasks.events.OwnerEvents.poll`) and the SQLite watcher's look for owners
with changes (`PollingWakeups._look`), each with nothing changed since the
last one, the usual case.

`--explain` prints the plans, at the large size, of every statement on the
task table of: the claim (`tasks.queue.claim`, without and with limits, over
a backlog of queued tasks), `POST /tasks` (`services.submit_task`: the
owner's lock, the cap and the fairness turn), the list and detail
requests, and the event reads. On PostgreSQL each is EXPLAIN (ANALYZE,
BUFFERS), run in a transaction that is rolled back; on SQLite EXPLAIN
QUERY PLAN. Sequential scans of the task table are listed at the end.

    python -m bench.growth                     # both databases, 10k -> 1M rows
    python -m bench.growth --small 1000 --large 20000 --backend sqlite
    python -m bench.growth --explain --backend pg
"""

from __future__ import annotations

import re
import sys
import time

from bench import common
from bench.drain import drain

OWNERS = 100
COLUMNS = (
    "owner_id, type, queue, args, status, priority, turn, concurrency_key, unique_key, "
    "progress, progress_message, output, output_truncated, error, attempts, max_retries, "
    "retries_left, lost_count, timeout, run_at, cancel_requested, claimed_by, worker, "
    "lease_expires_at, idempotency_key, request_fingerprint, created_at, updated_at, "
    "started_at, finished_at"
)
# Row x finished PAST - x seconds ago: a history spread over weeks in id
# order, as a table that grew over time has (one timestamp for all would
# tell the planner that no time column narrows anything).
PAST = 2_000_000
# Queued tasks the plans of the claim are taken over.
EXPLAIN_BACKLOG = 1000


def insert_rows(first_owner: int, start: int, stop: int) -> None:
    """Insert finished task rows numbered start..stop-1 in one statement."""
    from django.db import connection

    if connection.vendor == "postgresql":
        series = f"generate_series({start}, {stop - 1}) AS s(x)"
        args, output = "'{}'::jsonb", """'{"words": 3}'::jsonb"""
        now = f"now() - ({PAST} - x) * interval '1 second'"
        false = "false"
        error = """'{"message": "boom", "type": "ValueError"}'::jsonb"""
    else:
        series = (
            f"(WITH RECURSIVE s(x) AS (SELECT {start} UNION ALL SELECT x + 1 FROM s "
            f"WHERE x < {stop - 1}) SELECT x FROM s)"
        )
        args, output = "'{}'", """'{"words": 3}'"""
        now = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({PAST} - x) || ' seconds')"
        false = "0"
        error = """'{"message": "boom", "type": "ValueError"}'"""
    failed = f"x / {OWNERS} % 10 = 0"  # 1 in 10 of every owner's tasks
    sql = (
        f"INSERT INTO tasks_task ({COLUMNS}) SELECT "
        f"{first_owner} + x % {OWNERS}, 'wordcount', 'default', {args}, "
        f"CASE WHEN {failed} THEN 'failed' ELSE 'completed' END, 0, 0, '', NULL, "
        f"100, '', CASE WHEN {failed} THEN NULL ELSE {output} END, {false}, "
        f"CASE WHEN {failed} THEN {error} ELSE NULL END, 1, 0, 0, 0, 60, "
        f"{now}, {false}, 'growth', 'growth', NULL, NULL, '', {now}, {now}, {now}, {now} "
        f"FROM {series}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        # A table that grew over months has been vacuumed and analysed all
        # along; a fresh bulk insert has neither visibility map nor statistics.
        cursor.execute(
            "VACUUM ANALYZE tasks_task" if connection.vendor == "postgresql" else "ANALYZE"
        )


class _Done:
    """What an event read answers in `timings`, which checks status codes."""

    status_code = 200


def event_reads(owner) -> dict:
    """A poll of the owner's stream and, on SQLite, the watcher's look for
    changed owners, each reading the changes since the last one."""
    from django.db import connection
    from django.utils import timezone

    from tasks import events

    stream = events.OwnerEvents(owner.pk)
    stream.poll()  # the first poll only sets the cursor at now

    def poll():
        stream.poll()
        return _Done()

    reads = {"events poll (one user's stream)": poll}
    if connection.vendor == "sqlite":
        watcher = events.PollingWakeups()
        watcher.subscribe(owner.pk)

        def look():
            # As after another connection's commit: data_version moved.
            watcher._look((None, None), timezone.now())
            return _Done()

        reads["events watcher look"] = look
    return reads


def requests_for(api, owner) -> dict:
    from tasks.models import Task

    own = Task.objects.filter(owner=owner).order_by("-id")
    recent_id = own.values_list("pk", flat=True)[5]
    # Page 2 of a small page, so the owner's tasks always fill more than one.
    next_page = api.get("/tasks?page_size=5").json()["next"]
    return {
        "GET /tasks (newest 50)": lambda: api.get("/tasks?page_size=50"),
        "GET /tasks page 2 (cursor, 5)": lambda: api.get(next_page),
        # A page the owner's failed tasks fill at both sizes, so that the
        # two figures compare the same work.
        "GET /tasks?status=failed (5)": lambda: api.get("/tasks?status=failed&page_size=5"),
        "GET /tasks?type=wordcount": lambda: api.get("/tasks?type=wordcount&page_size=50"),
        "GET /tasks/status/{id}": lambda: api.get(f"/tasks/status/{recent_id}"),
        "GET /tasks/{id}": lambda: api.get(f"/tasks/{recent_id}"),
        "POST /tasks (lock, cap, turn, insert)": lambda: api.post(
            "/tasks", {"type": "bench.noop"}, format="json"
        ),
        **event_reads(owner),
    }


def timings(api, owner, repeat: int) -> dict:
    calls = requests_for(api, owner)
    samples = {name: [] for name in calls}
    for call in calls.values():  # warm up
        call()
    for _ in range(repeat):
        for name, call in calls.items():
            started = time.perf_counter()
            response = call()
            samples[name].append(time.perf_counter() - started)
            if response.status_code not in (200, 202):
                raise SystemExit(f"{name}: {response.status_code} {response.content[:500]!r}")
    return {
        name: {
            "p50_ms": 1000 * common.percentile(v, 50),
            "p99_ms": 1000 * common.percentile(v, 99),
        }
        for name, v in samples.items()
    }


def finish_queued() -> None:
    """Cancel what the submit timings left queued: a drain counts its own tasks only."""
    from django.utils import timezone

    from tasks.models import Status, Task

    Task.objects.filter(status=Status.QUEUED).transition(
        Status.CANCELLED, finished_at=timezone.now()
    )


# --- plans ---------------------------------------------------------------------------


def explain(api, owner, users) -> str:
    """Plans of every task-table statement the claim, the submit and the
    reads run, taken while they run, in a transaction rolled back at the end."""
    from django.conf import settings
    from django.db import connection, transaction
    from django.test import override_settings
    from django.utils import timezone

    from tasks import queue
    from tasks.models import Task

    postgres = connection.vendor == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    sections: list[tuple[str, list[tuple[str, list[str]]]]] = []

    def capture(label: str, action) -> None:
        statements: list[tuple[str, list[str]]] = []

        def wrapper(execute, sql, params, many, context):
            # Reads and the claim's UPDATE; an INSERT's plan says nothing.
            head = sql.lstrip()[:6].upper()
            if not many and "tasks_task" in sql and head in ("SELECT", "UPDATE"):
                cursor = context["cursor"]
                execute(prefix + sql, params, many, context)
                rows = cursor.fetchall()
                plan = [str(r[0]) if postgres else " ".join(map(str, r)) for r in rows]
                statements.append((_abbreviate(sql), plan))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(wrapper):
            action()
        sections.append((label, statements))

    now = timezone.now()
    with transaction.atomic():
        # A backlog to claim from, taking turns like users' submits do.
        Task.objects.bulk_create(
            Task(
                owner=users[i % 10],
                type="bench.noop",
                timeout=60,
                turn=i // 10,
                run_at=now,
                created_at=now,
                updated_at=now,
            )
            for i in range(EXPLAIN_BACKLOG)
        )
        # Statistics that know the backlog, as autovacuum's would: the plans
        # are those of a queue with work in it.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tasks_task")
        capture(
            f"claim of 2 tasks, no limits ({EXPLAIN_BACKLOG:,} queued)",
            lambda: queue.claim(cluster="explain", limit=2),
        )
        with override_settings(TASKS={**settings.TASKS, "MAX_RUNNING_PER_USER": 1000}):
            capture(
                "claim of 2 tasks under limits (TASK_MAX_RUNNING_PER_USER=1000)",
                lambda: queue.claim(cluster="explain", limit=2),
            )
        capture(
            "POST /tasks (services.submit_task)",
            lambda: api.post("/tasks", {"type": "bench.noop"}, format="json"),
        )
        capture("GET /tasks (newest 50)", lambda: api.get("/tasks?page_size=50"))
        capture("GET /tasks?status=failed", lambda: api.get("/tasks?status=failed&page_size=5"))
        recent = Task.objects.filter(owner=owner, status="completed").values("pk")[:1].get()
        capture("GET /tasks/{id}", lambda: api.get(f"/tasks/{recent['pk']}"))
        for label, read in event_reads(owner).items():
            capture(label, read)
        transaction.set_rollback(True)

    lines, scans = [], []
    for label, statements in sections:
        lines.append(f"\n### {label}")
        for number, (sql, plan) in enumerate(statements, start=1):
            lines.append(f"\n{number}. {sql}\n")
            lines += ["    " + row for row in plan]
            if any(_scans_table(row, postgres) for row in plan):
                scans.append(f"{label}, statement {number}")
    lines.append(
        "\nSequential scans of tasks_task: " + ("; ".join(scans) if scans else "none") + "."
    )
    return "\n".join(lines)


def _abbreviate(sql: str, width: int = 220) -> str:
    sql = re.sub(r"\s+", " ", sql)
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def _scans_table(row: str, postgres: bool) -> bool:
    if postgres:
        return bool(re.search(r"Seq Scan on tasks_task\b", row))
    # SQLite: "SCAN tasks_task" reads the whole table; "SCAN ... USING
    # [COVERING] INDEX" walks a whole index, as bad at this size.
    return bool(re.search(r"\bSCAN (TABLE )?tasks_task\b", row))


# --- the run -------------------------------------------------------------------------


def measure(backend: common.Backend, args) -> dict:
    from rest_framework.test import APIClient

    from bench import client

    users = backend.users("growth-", OWNERS)
    owner = users[0]
    if [u.pk for u in users] != list(range(owner.pk, owner.pk + OWNERS)):
        raise SystemExit("the owners' ids are not consecutive; the bulk insert assumes they are")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer " + client.tokens([owner])[0])
    out = {"sizes": [args.small, args.large]}
    out["drain_empty"] = drain(backend, "project", args.drain_tasks)
    started = time.monotonic()
    insert_rows(owner.pk, 0, args.small)
    out["insert_small_s"] = time.monotonic() - started
    out["small"] = timings(api, owner, args.repeat)
    started = time.monotonic()
    insert_rows(owner.pk, args.small, args.large)
    out["insert_large_s"] = time.monotonic() - started
    out["large"] = timings(api, owner, args.repeat)
    finish_queued()
    out["drain_large"] = drain(backend, "project", args.drain_tasks)
    out["plan"] = explain(api, owner, users) if args.explain else ""
    return out


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=100, help="Requests of each kind per size.")
    p.add_argument("--drain-tasks", type=int, default=1000, help="No-op tasks per drain.")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--explain", action="store_true")
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(
            args,
            lambda backend: measure(backend, args),
            ALLOWED_HOSTS="testserver",
            Q_WORKERS=str(args.workers),
        )
        return
    results = common.run_backends(args, argv)
    rows = []
    small, large = f"{args.small:,}", f"{args.large:,}"
    for backend, r in results.items():
        for name, at_small in r["small"].items():
            at_large = r["large"][name]
            rows.append(
                [
                    common.BACKENDS[backend],
                    name,
                    at_small["p50_ms"],
                    at_large["p50_ms"],
                    common.ratio(at_large["p50_ms"], at_small["p50_ms"]),
                    at_small["p99_ms"],
                    at_large["p99_ms"],
                    common.ratio(at_large["p99_ms"], at_small["p99_ms"])
                    + (" (target <= 1.3)" if name.startswith("POST") else ""),
                ]
            )
    print(f"\nGrowth: API latency with {small} vs {large} finished task rows (ms, in-process)\n")
    print(
        common.table(
            [
                "backend",
                "request",
                f"p50 @ {small}",
                f"p50 @ {large}",
                "ratio p50",
                f"p99 @ {small}",
                f"p99 @ {large}",
                "ratio p99",
            ],
            rows,
        )
    )
    print(
        f"\nGrowth: drain of {args.drain_tasks:,} no-op tasks, {args.workers} workers, "
        f"empty table vs {large} finished rows (tasks/s)\n"
    )
    print(
        common.table(
            ["backend", "empty /s", f"{large} rows /s", "ratio (target >= 0.9)"],
            [
                [
                    common.BACKENDS[backend],
                    r["drain_empty"]["tasks_per_s"],
                    r["drain_large"]["tasks_per_s"],
                    common.ratio(r["drain_large"]["tasks_per_s"], r["drain_empty"]["tasks_per_s"]),
                ]
                for backend, r in results.items()
            ],
        )
    )
    for backend, r in results.items():
        print(
            f"\n{common.BACKENDS[backend]}: bulk insert {r['insert_small_s']:.1f} s + "
            f"{r['insert_large_s']:.1f} s"
        )
        if r["plan"]:
            print(f"\n## {common.BACKENDS[backend]}: plans at {large} rows")
            print(r["plan"])


if __name__ == "__main__":
    main(sys.argv)
