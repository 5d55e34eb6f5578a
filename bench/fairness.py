"""Fairness: how long user B's one task waits to start when user A has a
backlog of 1,000 tasks queued ahead of it, on the project's cluster with
the default 2 workers.

A's tasks (`bench.sleep`, --task-seconds each) are submitted with
`services.submit_task` while no cluster runs; the cluster starts and, once
every worker runs one of A's tasks, B submits one task of the same length,
waits for it to finish, and does so again (--samples times). B's start
delay is its `started_at` minus its `created_at`.

The delay is shown in seconds and in task lengths per worker: a task's
measured length (A's mean, start to finish) divided by the workers, the
time between two starts while every worker is busy. Users taking turns put
B's task next to the head of the queue, one or two of those; the baseline
is first-come-first-served, where B would start after every task A had
queued when B submitted (that many task lengths per worker).

    python -m bench.fairness                     # both databases
    python -m bench.fairness --backlog 200 --backend sqlite
"""

from __future__ import annotations

import statistics
import sys

from bench import common


def measure(backend: common.Backend, args) -> dict:
    from tasks import services
    from tasks.models import Status, Task

    a = backend.users("fair-a-", 1)[0]
    b = backend.users("fair-b-", 1)[0]
    length = {"seconds": args.task_seconds}
    common.submit_many([a], args.backlog, "bench.sleep", length)
    a_tasks = Task.objects.filter(owner=a)

    stack = backend.stack()
    stack.start_cluster(name="project-cluster")
    samples = []
    try:
        common.wait_until(
            lambda: a_tasks.filter(started_at__isnull=False).count() >= args.workers,
            120,
            "every worker to run one of A's tasks",
        )
        for _ in range(args.samples):
            ahead = a_tasks.filter(status=Status.QUEUED).count()
            task = services.submit_task(owner=b, type_name="bench.sleep", args=length).task
            mine = Task.objects.filter(pk=task.pk)
            created, started = common.wait_until(
                lambda mine=mine: (
                    mine.filter(started_at__isnull=False)
                    .values_list("created_at", "started_at")
                    .first()
                ),
                300,
                "B's task to start",
                0.005,
            )
            common.wait_until(
                lambda mine=mine: mine.filter(status=Status.COMPLETED).exists(),
                300,
                "B's task to complete",
            )
            samples.append({"delay_s": (started - created).total_seconds(), "ahead": ahead})
        spans = a_tasks.filter(status=Status.COMPLETED).values_list("started_at", "finished_at")
        lengths = [(end - start).total_seconds() for start, end in spans]
    finally:
        stack.stop()
        logs = stack.all_logs()
    task_length = statistics.mean(lengths) if lengths else args.task_seconds
    return {
        "samples": samples,
        "task_length_s": task_length,
        "a_completed": len(lengths),
        "tracebacks": logs.count("Traceback"),
    }


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--backlog", type=int, default=1000, help="A's queued tasks.")
    p.add_argument("--task-seconds", type=float, default=0.1, help="Length of every task.")
    p.add_argument("--samples", type=int, default=5, help="B's tasks, one after the other.")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(
            args,
            lambda backend: measure(backend, args),
            Q_WORKERS=str(args.workers),
            # A's whole backlog must be accepted.
            TASK_MAX_UNFINISHED_PER_USER=str(max(1000, args.backlog + 1)),
        )
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        slot = r["task_length_s"] / args.workers
        delays = [s["delay_s"] for s in r["samples"]]
        median = statistics.median(delays)
        fifo = statistics.median(s["ahead"] for s in r["samples"]) * slot
        rows.append(
            [
                common.BACKENDS[backend],
                args.workers,
                r["task_length_s"],
                statistics.median(s["ahead"] for s in r["samples"]),
                median,
                max(delays),
                median / slot,
                max(delays) / slot,
                fifo,
                common.ratio(median, fifo),
                r["tracebacks"],
            ]
        )
    print(
        f"\nFairness: start delay of user B's task behind user A's {args.backlog:,} queued "
        f"tasks of {args.task_seconds:g} s, median and worst of {args.samples}\n"
    )
    print(
        common.table(
            [
                "backend",
                "workers",
                "task length s",
                "A's queued ahead",
                "delay s",
                "worst s",
                "delay, task lengths / worker",
                "worst, task lengths / worker",
                "first-come-first-served s",
                "ratio to it",
                "tracebacks",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
