"""Drain throughput: N no-op tasks through the project (submitted with
`services.submit_task`, run by `manage.py qcluster` with the project's
settings) versus N no-op `async_task` calls through stock django-q2 (its own
ORM broker, its own cluster on bench/stock_settings.py), on the same
database with the same number of workers.

For each mode the queue is filled while no cluster runs, then a cluster
starts and drains it. Throughput counts from the moment the first result is
recorded in the database to the moment the last one is (the bench polls
every 20 ms), so cluster start-up is not in the figure. Stock django-q2
saves its results (save_limit 0: kept, not pruned) because that is how one
learns a raw task finished; the project keeps the result in its task row.

Stock django-q2's workers stamp a result (`stopped`) when the function
returns, and its one monitor process saves it later; with no-op tasks the
monitor may fall behind, so the first-to-last span of `stopped` shows how
fast its workers ran functions, not how fast results became known. The
table shows that figure too, beside the recorded one; for the project both
are the same moment (the completion writes `finished_at`).

    python -m bench.drain                  # both databases, 2,000 tasks, 2 workers
    python -m bench.drain --tasks 200 --backend sqlite
"""

from __future__ import annotations

import sys
import time
import uuid

from bench import common


def drain(
    backend: common.Backend,
    mode: str,
    tasks: int,
    *,
    type_name: str = "bench.noop",
    owners: int | None = None,
    cluster_env: dict[str, str] | None = None,
) -> dict:
    """Fill the queue with `tasks` no-ops while no cluster runs, then drain it.

    mode "project": `type_name` tasks of `owners` users (enough to stay below
    the per-user cap when not given) on the project's cluster; "raw": stock
    `async_task` calls on a stock cluster. `cluster_env` is added to the
    cluster's environment.
    """
    from django.db.models import Max, Min
    from django_q.models import Success
    from django_q.tasks import async_task

    from tasks.models import Status, Task

    # Each round its own users (project) or group (raw), so that it counts
    # only its own completions.
    tag = f"drain-{mode}-{uuid.uuid4().hex[:8]}-"
    started = time.monotonic()
    if mode == "project":
        users = backend.users(tag, owners or common.owners_for(tasks))
        common.submit_many(users, tasks, type_name)
        mine = Task.objects.filter(owner__in=users)
        done = mine.filter(status=Status.COMPLETED)
        env = dict(cluster_env or {})
    else:
        broker = backend.stock_broker()
        for _ in range(tasks):
            async_task(common.RAW_NOOP, broker=broker, save=True, timeout=60, group=tag)
        done = Success.objects.filter(group=tag)
        env = {"DJANGO_SETTINGS_MODULE": common.STOCK_SETTINGS, **(cluster_env or {})}
    fill_seconds = time.monotonic() - started

    stack = backend.stack()
    stack.start_cluster(env, name=f"{mode}-cluster")
    try:
        first_seen = common.wait_until(
            lambda: done.exists() and time.monotonic(), 120, "a result", 0.02
        )
        last_seen = common.wait_until(
            lambda: done.count() >= tasks and time.monotonic(), 600, f"{tasks} {mode} tasks", 0.02
        )
        if mode == "project":
            span = done.aggregate(first=Min("finished_at"), last=Max("finished_at"))
            others = mine.exclude(status=Status.COMPLETED).count()
            if others:
                raise SystemExit(f"{others} project tasks did not complete")
        else:
            span = done.aggregate(first=Min("stopped"), last=Max("stopped"))
    finally:
        stack.stop()
        logs = stack.all_logs()
    stamped = (span["last"] - span["first"]).total_seconds()
    recorded = last_seen - first_seen
    return {
        "tasks_per_s": (tasks - 1) / recorded if recorded else float("nan"),
        "stamped_per_s": (tasks - 1) / stamped if stamped else float("nan"),
        "seconds": recorded,
        "fill_seconds": fill_seconds,
        "locked": logs.count("database is locked"),
        "tracebacks": logs.count("Traceback"),
    }


def alternate(rounds: int, modes: dict) -> dict:
    """Run each mode's callable `rounds` times, the modes taking turns so that
    all see the same drift in the machine's load; each keeps its best round."""
    results: dict[str, list[dict]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, run in modes.items():
            results[name].append(run())
    return {
        name: max(runs, key=lambda r: r["tasks_per_s"]) | {"rounds": len(runs)}
        for name, runs in results.items()
    }


def cluster_settings(args) -> dict[str, str]:
    """The cluster options every drain benchmark runs with."""
    recycle = {} if args.recycle is None else {"Q_RECYCLE": str(args.recycle)}
    return {"Q_WORKERS": str(args.workers), "Q_SAVE_LIMIT": "0", **recycle}


def add_cluster_arguments(p) -> None:
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="Rounds per mode (best one counts).")
    p.add_argument(
        "--recycle",
        type=int,
        default=None,
        help="Tasks a worker process runs before django-q2 replaces it (Q_RECYCLE; the "
        "project's default when not given, for both sides). Each replacement idles a "
        "worker for up to half a second; django-q2's own default, 500, makes that idling "
        "the pace of both sides.",
    )


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    add_cluster_arguments(p)
    args = p.parse_args(argv[1:])
    if args.child:

        def body(backend: common.Backend) -> dict:
            return alternate(
                args.rounds,
                {
                    mode: lambda mode=mode: drain(backend, mode, args.tasks)
                    for mode in ("raw", "project")
                },
            )

        common.child(args, body, **cluster_settings(args))
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        raw, project = r["raw"], r["project"]
        rows.append(
            [
                common.BACKENDS[backend],
                args.workers,
                args.tasks,
                raw["tasks_per_s"],
                project["tasks_per_s"],
                common.ratio(project["tasks_per_s"], raw["tasks_per_s"]),
                raw["stamped_per_s"],
                common.ratio(project["tasks_per_s"], raw["stamped_per_s"]),
                raw["locked"] + project["locked"],
                raw["tracebacks"] + project["tracebacks"],
            ]
        )
    print(
        f"\nDrain throughput: {args.tasks} no-op tasks, first to last result recorded, "
        f"best of {args.rounds} alternating rounds each; worker processes recycled "
        + ("at the project's default" if args.recycle is None else f"every {args.recycle} tasks")
        + "\n"
    )
    print(
        common.table(
            [
                "backend",
                "workers",
                "tasks",
                "stock django-q2 /s",
                "project /s",
                "ratio (target >= 1.0)",
                "stock, by its workers' stop times /s",
                "ratio to that",
                "'database is locked'",
                "tracebacks",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
