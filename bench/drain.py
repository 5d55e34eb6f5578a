"""Drain throughput: N no-op tasks through the project's worker path versus N
no-op `async_task` calls through raw django-q2, same broker, same workers.

For each mode the broker is filled while no cluster runs, then a cluster
starts and drains it. Throughput counts from the moment the first result is
recorded in the database to the moment the last one is (the bench polls
every 20 ms), so cluster start-up is not in the figure. Raw django-q2 saves
its results (save_limit 0: kept, not pruned) because that is how one learns
a raw task finished; the project keeps the result in its own row and tells
django-q2 not to save one.

Raw django-q2's workers stamp a result (`stopped`) when the function
returns, and its one monitor process saves it later; with no-op tasks the
monitor falls behind, so the first-to-last span of `stopped` shows how fast
its workers ran functions, not how fast results became known. The table
shows that figure too, beside the recorded one; for the project both are
the same moment (the completion writes `finished_at`).

    python -m bench.drain                  # both backends, 2,000 tasks, 2 workers
    python -m bench.drain --tasks 200 --backend sqlite
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from bench import common


def drain(backend: common.Backend, mode: str, tasks: int, workers: int) -> dict:
    from django.db.models import Max, Min
    from django.utils import timezone
    from django_q.models import Success
    from django_q.tasks import async_task

    from tasks import queue
    from tasks.models import Status, Task

    # Each round its own owner (project) or group (raw), so that it counts
    # only its own completions.
    tag = f"drain-{mode}-{uuid.uuid4().hex[:8]}"
    owner = backend.users(tag, 1)[0]
    started = time.monotonic()
    if mode == "project":
        now = timezone.now()
        rows = Task.objects.bulk_create(
            Task(owner=owner, type="bench.noop", timeout=60, enqueued_at=now, transport_id=f"d{i}")
            for i in range(tasks)
        )
        for row in rows:
            queue.enqueue(task_id=row.pk, attempt=1, timeout=60, name=row.transport_id)
    else:
        broker = backend.stock_broker()
        for _ in range(tasks):
            async_task("bench.jobs.raw_noop", broker=broker, save=True, timeout=60, group=tag)
    fill_seconds = time.monotonic() - started

    if mode == "project":
        done = Task.objects.filter(owner=owner, status=Status.COMPLETED)
    else:
        done = Success.objects.filter(group=tag)
    # Raw django-q2 runs on its own broker at both ends; the project on its.
    stack = backend.stack(env={"BENCH_STOCK_BROKER": "1"} if mode == "raw" else None)
    stack.start_cluster()
    try:
        first_seen = common.wait_until(
            lambda: done.exists() and time.monotonic(), 60, "a result", 0.02
        )
        last_seen = common.wait_until(
            lambda: done.count() >= tasks and time.monotonic(), 300, f"{tasks} {mode} tasks", 0.02
        )
        if mode == "project":
            span = done.aggregate(first=Min("finished_at"), last=Max("finished_at"))
        else:
            span = done.aggregate(first=Min("stopped"), last=Max("stopped"))
    finally:
        stack.stop_cluster()
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


def run(args) -> dict:
    def body(backend: common.Backend) -> dict:
        # Modes alternate round by round so that both see the same drift in
        # the machine's load; each keeps its best round.
        rounds: dict[str, list[dict]] = {mode: [] for mode in args.modes.split(",")}
        for _ in range(args.rounds):
            for mode in rounds:
                rounds[mode].append(drain(backend, mode, args.tasks, args.workers))
        return {
            mode: max(results, key=lambda r: r["tasks_per_s"]) | {"rounds": len(results)}
            for mode, results in rounds.items()
        }

    recycle = {} if args.recycle is None else {"Q_RECYCLE": str(args.recycle)}
    common.child(args, body, Q_WORKERS=str(args.workers), Q_SAVE_LIMIT="0", **recycle)
    return {}


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="Rounds per mode (best one counts).")
    p.add_argument(
        "--recycle",
        type=int,
        default=None,
        help="Tasks a worker process runs before django-q2 replaces it (Q_RECYCLE; the "
        "project's default when not given). Each replacement idles a worker for up to half "
        "a second; django-q2's own default, 500, makes that idling the pace of both sides.",
    )
    p.add_argument("--modes", default="raw,project", help=argparse.SUPPRESS)
    args = p.parse_args(argv[1:])
    if args.child:
        run(args)
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
                f"{project['tasks_per_s'] / raw['tasks_per_s']:.2f}",
                raw["stamped_per_s"],
                f"{project['tasks_per_s'] / raw['stamped_per_s']:.2f}",
                raw["locked"] + project["locked"],
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
                "raw django-q2 /s",
                "project /s",
                "ratio (target >= 0.9)",
                "raw, by its workers' stop times /s",
                "ratio to that",
                "'database is locked'",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
