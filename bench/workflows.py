"""Batches and schedules: how long `POST /tasks/batch` with 1,000 items
takes to be accepted, and how late schedules fire.

Batch: one request of `--batch` no-op items to a gunicorn server (no
cluster runs), each round by a user of its own (so the per-user cap never
refuses it), timed from sending the request to the 202. Target: under a
second on SQLite.

Fire lag: `--schedules` interval schedules (every second, overlap allowed)
fired by two clusters until `--fires` tasks ran. For each fire, `fired`
is created_at - scheduled_for (how late housekeeping created the task) and
`started` is started_at - scheduled_for (how late a worker began it).

    python -m bench.workflows                        # both databases
    python -m bench.workflows --backend sqlite --fires 100
"""

from __future__ import annotations

import sys
import time

from bench import client, common


def measure(backend: common.Backend, args) -> dict:
    import requests

    from tasks import schedules
    from tasks.models import Task

    users = backend.users("workflow-", args.rounds + 1)
    tokens = client.tokens(users)
    stack = backend.stack()
    stack.start_web()
    batch_ms: list[float] = []
    try:
        items = [{"type": "bench.noop"} for _ in range(args.batch)]
        with requests.Session() as session:
            for token in tokens[: args.rounds]:
                started = time.perf_counter()
                response = session.post(
                    stack.base + "/tasks/batch",
                    json={"tasks": items},
                    headers={"Authorization": "Bearer " + token},
                    timeout=120,
                )
                batch_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 202:
                    raise SystemExit(f"batch refused: {response.status_code} {response.text[:500]}")
        # The batches' tasks would be drained first: only the schedules' count.
        Task.objects.all().delete()

        owner = users[-1]
        made = [
            schedules.create_schedule(
                owner=owner, type="bench.noop", interval_seconds=1, overlap="allow"
            )
            for _ in range(args.schedules)
        ]
        stack.start_cluster()
        stack.start_cluster()
        fired = Task.objects.filter(schedule__in=made, started_at__isnull=False)
        common.wait_until(
            lambda: fired.count() >= args.fires,
            args.fires / args.schedules + 120,
            f"{args.fires} fires to start",
            0.2,
        )
        rows = list(
            fired.order_by("scheduled_for").values_list(
                "scheduled_for", "created_at", "started_at"
            )[: args.fires]
        )
    finally:
        stack.stop()
    lag_fired = [(created - due).total_seconds() * 1000 for due, created, _ in rows]
    lag_started = [(began - due).total_seconds() * 1000 for due, _, began in rows]
    logs = stack.all_logs()
    return {
        "batch_ms": batch_ms,
        "fires": len(rows),
        "fired_p50": common.percentile(lag_fired, 50),
        "fired_p99": common.percentile(lag_fired, 99),
        "started_p50": common.percentile(lag_started, 50),
        "started_p99": common.percentile(lag_started, 99),
        "started_max": max(lag_started, default=float("nan")),
        "locked": logs.count("database is locked"),
        "tracebacks": logs.count("Traceback"),
    }


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1000, help="Items in one batch.")
    p.add_argument("--rounds", type=int, default=5, help="Batches sent (one user each).")
    p.add_argument("--schedules", type=int, default=4, help="Interval schedules, each 1 s.")
    p.add_argument("--fires", type=int, default=100, help="Fires measured.")
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(args, lambda backend: measure(backend, args))
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        batch = sorted(r["batch_ms"])
        rows.append(
            [
                common.BACKENDS[backend],
                batch[0],
                common.percentile(batch, 50),
                batch[-1],
                r["fires"],
                r["fired_p50"],
                r["fired_p99"],
                r["started_p50"],
                r["started_p99"],
                r["started_max"],
                r["locked"],
                r["tracebacks"],
            ]
        )
    print(
        f"\nBatches of {args.batch} items ({args.rounds} rounds), and fire lag of "
        f"{args.schedules} one-second schedules on two clusters ({args.fires} fires)\n"
    )
    print(
        common.table(
            [
                "backend",
                "batch min ms",
                "batch p50 ms",
                "batch max ms (target < 1000)",
                "fires",
                "fired p50 ms",
                "fired p99 ms",
                "started p50 ms",
                "started p99 ms (target < 1000)",
                "started max ms",
                "'database is locked'",
                "tracebacks",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
