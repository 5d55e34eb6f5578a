"""Submit-to-completed latency, one task at a time: the project's
`submit_task` (a row in the task table, claimed by the project's cluster,
result in the row) versus stock django-q2's `async_task` (its ORM broker,
its own cluster, result saved by django-q2), on the same database. Both
clusters run side by side and the two kinds alternate, so both see the same
machine load; the bench process polls the database every --poll-ms for the
result, and waits a random pause (up to --gap-ms) before each submit, so
that submits arrive at random moments of the clusters' poll cycles, as
users' do, instead of in step with them.

An idle project cluster on SQLite looks at the table every Q_POLL seconds;
on PostgreSQL a NOTIFY sent with the submit wakes it. Stock django-q2 polls
its ORM broker every Q_POLL seconds on both.

    python -m bench.latency                 # both databases, 200 tasks each
    python -m bench.latency --tasks 20 --backend sqlite
"""

from __future__ import annotations

import itertools
import random
import sys
import time

from bench import common

# The goals for the project's p50, per database (ms).
P50_TARGET_MS = {"sqlite": 25.0, "pg": 5.0}
# The stages of one project task, between the bench's clock and the row's
# timestamps: the submit until `submit_task` returned (its transaction: the
# row's created_at is set before it, the wake-up is sent at its commit),
# until a worker started it (wake-up, claim and hand-over), until it
# completed, until the bench saw it.
STAGES = ("submit", "claim_and_start", "run_and_complete", "seen")


def measure(backend: common.Backend, tasks: int, poll: float, gap: float) -> dict:
    from django_q.models import Success
    from django_q.tasks import async_task

    from tasks import services
    from tasks.models import Status, Task

    owner = backend.users("latency-", 1)[0]
    broker = backend.stock_broker()

    def wait(done, started: float) -> None:
        while not done.exists():
            if time.perf_counter() - started > 120:
                raise SystemExit("a task did not complete within 120 s")
            time.sleep(poll)

    stages: dict[str, list[float]] = {name: [] for name in STAGES}

    def project() -> float:
        started, wall = time.perf_counter(), time.time()
        task_id = services.submit_task(owner=owner, type_name="bench.noop").task.pk
        submitted = wall + (time.perf_counter() - started)
        wait(Task.objects.filter(pk=task_id, status=Status.COMPLETED), started)
        elapsed = time.perf_counter() - started
        # Where the time went, from the row's own timestamps (one clock: one host).
        row = Task.objects.values("started_at", "finished_at").get(pk=task_id)
        marks = [
            submitted,
            row["started_at"].timestamp(),
            row["finished_at"].timestamp(),
        ]
        for name, (a, b) in zip(STAGES, itertools.pairwise([wall, *marks, wall + elapsed])):
            stages[name].append(b - a)
        return elapsed

    def raw() -> float:
        started = time.perf_counter()
        task_id = async_task(common.RAW_NOOP, broker=broker, save=True, timeout=60)
        wait(Success.objects.filter(id=task_id), started)
        return time.perf_counter() - started

    stack = backend.stack()
    stack.start_cluster(name="project-cluster")
    stack.start_cluster({"DJANGO_SETTINGS_MODULE": common.STOCK_SETTINGS}, name="stock-cluster")
    try:
        # Warm up: the first task of each kind waits for its cluster to start
        # and pays for imports and connections.
        project(), raw()
        samples = {"project": [], "raw": []}
        for values in stages.values():
            values.clear()
        rng = random.Random(0)
        for _ in range(tasks):
            time.sleep(rng.uniform(0, gap))
            samples["project"].append(project())
            time.sleep(rng.uniform(0, gap))
            samples["raw"].append(raw())
    finally:
        stack.stop()
        logs = stack.all_logs()
    return {
        kind: {
            "p50_ms": 1000 * common.percentile(values, 50),
            "p99_ms": 1000 * common.percentile(values, 99),
        }
        for kind, values in samples.items()
    } | {
        "stages_p50_ms": {name: 1000 * common.percentile(v, 50) for name, v in stages.items()},
        "locked": logs.count("database is locked"),
        "tracebacks": logs.count("Traceback"),
    }


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--poll-ms", type=float, default=2.0, help="How often the bench looks.")
    p.add_argument(
        "--gap-ms", type=float, default=100.0, help="Longest random pause before a submit."
    )
    p.add_argument(
        "--q-poll",
        default="0.05",
        help="Q_POLL of both clusters, in seconds (the project's default).",
    )
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(
            args,
            lambda backend: measure(backend, args.tasks, args.poll_ms / 1000, args.gap_ms / 1000),
            Q_WORKERS=str(args.workers),
            Q_POLL=args.q_poll,
            Q_SAVE_LIMIT="0",
        )
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        raw, project = r["raw"], r["project"]
        rows.append(
            [
                common.BACKENDS[backend] + f" (poll {args.q_poll}s)",
                raw["p50_ms"],
                project["p50_ms"],
                common.ratio(project["p50_ms"], raw["p50_ms"]),
                f"<= {P50_TARGET_MS[backend]:g}",
                raw["p99_ms"],
                project["p99_ms"],
                common.ratio(project["p99_ms"], raw["p99_ms"]),
                r["locked"],
                r["tracebacks"],
            ]
        )
    print(
        f"\nSubmit-to-completed latency, one no-op at a time, {args.tasks} of each, "
        f"{args.workers} workers per cluster (ms)\n"
    )
    print(
        common.table(
            [
                "backend",
                "stock p50",
                "project p50",
                "ratio p50",
                "project p50 target",
                "stock p99",
                "project p99",
                "ratio p99",
                "'database is locked'",
                "tracebacks",
            ],
            rows,
        )
    )
    print("\nWhere the project's time goes, p50 of each stage (ms)\n")
    print(
        common.table(
            ["backend", *STAGES],
            [
                [common.BACKENDS[backend], *r["stages_p50_ms"].values()]
                for backend, r in results.items()
            ],
        )
    )


if __name__ == "__main__":
    main(sys.argv)
