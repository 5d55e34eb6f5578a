"""Growth: the API's list and status latency with 10,000 versus 1,000,000 task
rows in the table. Rows are bulk-inserted in SQL (100 owners; the measured
user owns 1% of them, so their own history grows 100x too; 1 in 50 queued,
the rest completed). Requests go through the whole Django/DRF stack
in-process (no HTTP), so the figures are the view and its queries.

    python -m bench.growth                     # both backends, 10k -> 1M rows
    python -m bench.growth --small 1000 --large 20000 --backend sqlite
    python -m bench.growth --explain           # also print the list query's plan
"""

from __future__ import annotations

import sys
import time

from bench import common

OWNERS = 100
COLUMNS = (
    "owner_id, type, args, status, priority, progress, progress_message, output, "
    "output_truncated, error, attempts, max_retries, retries_left, lost_count, timeout, "
    "run_at, enqueued_at, cancel_requested, lease_expires_at, worker, transport_id, "
    "idempotency_key, request_fingerprint, created_at, updated_at, started_at, finished_at"
)


def insert_rows(first_owner: int, start: int, stop: int) -> None:
    """Insert task rows numbered start..stop-1 in one statement."""
    from django.db import connection

    if connection.vendor == "postgresql":
        series = f"generate_series({start}, {stop - 1}) AS s(x)"
        args, output, now = "'{}'::jsonb", """'{"words": 3}'::jsonb""", "now()"
        boolean = "false"
    else:
        series = (
            f"(WITH RECURSIVE s(x) AS (SELECT {start} UNION ALL SELECT x + 1 FROM s "
            f"WHERE x < {stop - 1}) SELECT x FROM s)"
        )
        args, output = "'{}'", """'{"words": 3}'"""
        now, boolean = "strftime('%Y-%m-%d %H:%M:%f', 'now')", "0"
    queued = f"x / {OWNERS} % 50 = 0"  # 1 in 50 of every owner's tasks
    status = f"CASE WHEN {queued} THEN 'queued' ELSE 'completed' END"
    sql = (
        f"INSERT INTO tasks_task ({COLUMNS}) SELECT "
        f"{first_owner} + x % {OWNERS}, 'wordcount', {args}, {status}, 0, 100, '', "
        f"CASE WHEN {queued} THEN NULL ELSE {output} END, {boolean}, NULL, 1, 0, 0, 0, 60, "
        f"NULL, {now}, {boolean}, NULL, '', 'g' || x, NULL, '', {now}, {now}, {now}, "
        f"CASE WHEN {queued} THEN NULL ELSE {now} END FROM {series}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.execute("ANALYZE")


def requests_for(api, owner) -> dict:
    from tasks.models import Task

    own = Task.objects.filter(owner=owner).order_by("-id")
    recent_id = own.values_list("pk", flat=True)[5]
    # Page 2 of a small page, so the owner's tasks always fill more than one.
    next_page = api.get("/tasks?page_size=5").json()["next"]
    return {
        "GET /tasks (newest 50)": lambda: api.get("/tasks?page_size=50"),
        "GET /tasks page 2 (cursor, 5)": lambda: api.get(next_page),
        "GET /tasks?status=queued": lambda: api.get("/tasks?status=queued&page_size=50"),
        "GET /tasks?type=wordcount": lambda: api.get("/tasks?type=wordcount&page_size=50"),
        "GET /tasks/status/{id}": lambda: api.get(f"/tasks/status/{recent_id}"),
        "GET /tasks/{id}": lambda: api.get(f"/tasks/{recent_id}"),
        "POST /tasks (cap check + insert)": lambda: api.post(
            "/tasks", {"type": "bench.noop"}, format="json"
        ),
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
            assert response.status_code in (200, 202), (name, response.status_code)
    return {
        name: {
            "p50_ms": 1000 * common.percentile(v, 50),
            "p99_ms": 1000 * common.percentile(v, 99),
        }
        for name, v in samples.items()
    }


def explain(owner) -> str:
    from django.db import connection

    from tasks.models import Task

    lines = []
    for label, qs in [
        ("list", Task.objects.filter(owner=owner).order_by("-id")[:51]),
        (
            "list ?status=queued",
            Task.objects.filter(owner=owner, status="queued").order_by("-id")[:51],
        ),
        # What services.submit_task asks: exists() drops the ordering.
        ("cap check", Task.objects.filter(owner=owner).unfinished().order_by()[999:1000]),
    ]:
        sql, params = qs.query.sql_with_params()
        with connection.cursor() as cursor:
            prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
            cursor.execute(prefix + sql, params)
            plan = "\n    ".join(" ".join(map(str, row)) for row in cursor.fetchall())
        lines.append(f"  {label}:\n    {plan}")
    return "\n".join(lines)


def measure(backend: common.Backend, args) -> dict:
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    users = backend.users("growth-", OWNERS)
    owner = users[0]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(owner).access_token}")
    out = {"sizes": [args.small, args.large]}
    started = time.monotonic()
    insert_rows(owner.pk, 0, args.small)
    out["insert_small_s"] = time.monotonic() - started
    out["small"] = timings(api, owner, args.repeat)
    started = time.monotonic()
    insert_rows(owner.pk, args.small, args.large)
    out["insert_large_s"] = time.monotonic() - started
    out["large"] = timings(api, owner, args.repeat)
    out["plan"] = explain(owner) if args.explain else ""
    return out


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=100, help="Requests of each kind per size.")
    p.add_argument("--explain", action="store_true")
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(
            args,
            lambda backend: measure(backend, args),
            ALLOWED_HOSTS="testserver",
            TASK_MAX_UNFINISHED_PER_USER="1000",
            # Measured here: the cap's probe. Not measured: the throttle,
            # which at its default would refuse the second hundred submits.
            THROTTLE_TASK_CREATE="1000000/min",
        )
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        for name, small in r["small"].items():
            large = r["large"][name]
            rows.append(
                [
                    common.BACKENDS[backend],
                    name,
                    small["p50_ms"],
                    large["p50_ms"],
                    f"{large['p50_ms'] / small['p50_ms']:.2f}",
                    small["p99_ms"],
                    large["p99_ms"],
                ]
            )
    small, large = f"{args.small:,}", f"{args.large:,}"
    print(f"\nGrowth: API latency with {small} vs {large} task rows (ms, in-process)\n")
    print(
        common.table(
            [
                "backend",
                "request",
                f"p50 @ {small}",
                f"p50 @ {large}",
                "ratio (target <= 1.3)",
                f"p99 @ {small}",
                f"p99 @ {large}",
            ],
            rows,
        )
    )
    for backend, r in results.items():
        print(
            f"\n{common.BACKENDS[backend]}: bulk insert {r['insert_small_s']:.1f} s + "
            f"{r['insert_large_s']:.1f} s"
        )
        if r["plan"]:
            print(r["plan"])


if __name__ == "__main__":
    main(sys.argv)
