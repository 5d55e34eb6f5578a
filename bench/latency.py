"""Submit-to-completed latency, one task at a time: the project's
`submit_task` (row + message after commit, worker path, result in the row)
versus raw django-q2 `async_task` (result saved by django-q2), on one running
cluster. The two kinds alternate so both see the same machine load; the
bench process polls the database every --poll-ms for the result.

    python -m bench.latency                 # both backends, 200 tasks each
    python -m bench.latency --tasks 20 --backend sqlite
"""

from __future__ import annotations

import sys
import time

from bench import common


def measure(backend: common.Backend, tasks: int, poll: float) -> dict:
    from django_q.models import Success
    from django_q.tasks import async_task

    from tasks import services
    from tasks.models import Status, Task

    owner = backend.users("latency-", 1)[0]

    def wait(done, started: float) -> None:
        while not done.exists():
            if time.perf_counter() - started > 120:
                raise SystemExit("a task did not complete within 120 s")
            time.sleep(poll)

    # Both kinds alternate on one cluster, which takes messages with the
    # project's broker; raw django-q2 sends with its own.
    broker = backend.stock_broker()

    def project() -> float:
        started = time.perf_counter()
        task_id = services.submit_task(owner=owner, type_name="bench.noop").task.pk
        wait(Task.objects.filter(pk=task_id, status=Status.COMPLETED), started)
        return time.perf_counter() - started

    def raw() -> float:
        started = time.perf_counter()
        task_id = async_task("bench.jobs.raw_noop", broker=broker, save=True, timeout=60)
        wait(Success.objects.filter(id=task_id), started)
        return time.perf_counter() - started

    stack = backend.stack()
    stack.start_cluster()
    try:
        # Warm up: the first task of each kind pays for imports and connections.
        project(), raw()
        samples = {"project": [], "raw": []}
        for _ in range(tasks):
            samples["project"].append(project())
            samples["raw"].append(raw())
    finally:
        stack.stop_cluster()
        logs = stack.all_logs()
    return {
        kind: {
            "p50_ms": 1000 * common.percentile(values, 50),
            "p99_ms": 1000 * common.percentile(values, 99),
        }
        for kind, values in samples.items()
    } | {"locked": logs.count("database is locked")}


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--poll-ms", type=float, default=2.0, help="How often the bench looks.")
    p.add_argument(
        "--q-poll",
        default="0.05",
        help="django-q2's ORM broker poll interval in seconds (Q_POLL; the project default).",
    )
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(
            args,
            lambda backend: measure(backend, args.tasks, args.poll_ms / 1000),
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
                common.BACKENDS[backend]
                + (f" (poll {args.q_poll}s)" if backend == "sqlite" else ""),
                raw["p50_ms"],
                project["p50_ms"],
                f"{project['p50_ms'] / raw['p50_ms']:.2f}",
                raw["p99_ms"],
                project["p99_ms"],
                f"{project['p99_ms'] / raw['p99_ms']:.2f}",
            ]
        )
    print(
        f"\nSubmit-to-completed latency, one no-op at a time, {args.tasks} of each, "
        f"{args.workers} workers (ms)\n"
    )
    print(
        common.table(
            [
                "backend",
                "raw p50",
                "project p50",
                "ratio p50 (target <= 1.1)",
                "raw p99",
                "project p99",
                "ratio p99",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
