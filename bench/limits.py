"""What limits and fairness cost: drain throughput of N no-op tasks on the
project's cluster with no limits, versus with a per-type `concurrency`
limit and TASK_MAX_RUNNING_PER_USER, both set high enough never to bind,
and versus the same with the tasks spread over 100 users (so the claim
takes their turns). Same database, same workers, modes alternating.

With no limits a claim is one UPDATE. With any limit that may apply to a
queue, claims from it take turns (an advisory lock on PostgreSQL), count
what runs, and read candidates before the UPDATE (tasks.queue): that is the
cost measured here. The no-limits cluster runs without the limited type
registered (bench/jobs.py registers it only with BENCH_LIMITED_CONCURRENCY)
and with TASK_MAX_RUNNING_PER_USER=0.

    python -m bench.limits                  # both databases, 2,000 tasks, 2 workers
    python -m bench.limits --tasks 300 --backend sqlite
"""

from __future__ import annotations

import sys

from bench import common
from bench.drain import add_cluster_arguments, alternate, cluster_settings, drain

MODES = ("none", "limits", "limits, 100 users")


def run(backend: common.Backend, args) -> dict:
    plain = {"BENCH_LIMITED_CONCURRENCY": "", "TASK_MAX_RUNNING_PER_USER": "0"}
    limited = {
        "BENCH_LIMITED_CONCURRENCY": str(args.limit),
        "TASK_MAX_RUNNING_PER_USER": str(args.limit),
    }
    return alternate(
        args.rounds,
        {
            "none": lambda: drain(backend, "project", args.tasks, cluster_env=plain),
            "limits": lambda: drain(
                backend, "project", args.tasks, type_name="bench.limited", cluster_env=limited
            ),
            "limits, 100 users": lambda: drain(
                backend,
                "project",
                args.tasks,
                type_name="bench.limited",
                owners=100,
                cluster_env=limited,
            ),
        },
    )


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    add_cluster_arguments(p)
    p.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="The type's concurrency and TASK_MAX_RUNNING_PER_USER (never reached).",
    )
    args = p.parse_args(argv[1:])
    if args.child:
        # The bench process submits the limited type, so it registers it too.
        common.child(
            args,
            lambda backend: run(backend, args),
            BENCH_LIMITED_CONCURRENCY=str(args.limit),
            **cluster_settings(args),
        )
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        none = r["none"]["tasks_per_s"]
        row = [common.BACKENDS[backend], args.workers, args.tasks, none]
        for mode in MODES[1:]:
            row += [r[mode]["tasks_per_s"], common.ratio(r[mode]["tasks_per_s"], none)]
        row.append(sum(r[mode]["locked"] for mode in MODES))
        row.append(sum(r[mode]["tracebacks"] for mode in MODES))
        rows.append(row)
    print(
        f"\nLimits and fairness cost: drain of {args.tasks:,} no-op tasks, best of "
        f"{args.rounds} alternating rounds each; limits of {args.limit:,} (never reached)\n"
    )
    print(
        common.table(
            [
                "backend",
                "workers",
                "tasks",
                "no limits /s",
                "limits /s",
                "ratio (target >= 0.9)",
                "limits, 100 users /s",
                "ratio (target >= 0.9)",
                "'database is locked'",
                "tracebacks",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
