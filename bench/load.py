"""Load without errors: several users, for a fixed time, create tasks and poll
their status and their task list against gunicorn (4 workers) and a running
cluster (2 workers). Afterwards every created task must reach a terminal
state; the logs of every process are searched for "database is locked" and
tracebacks.

    python -m bench.load                        # both databases, 60 s each
    python -m bench.load --seconds 10 --backend sqlite
"""

from __future__ import annotations

import sys
import time

from bench import client, common

PLAN = [(2, "create"), (5, "status"), (2, "list"), (1, "completed")]


def request(session, name: str, state) -> int:
    if name == "create" or not state.created:
        text = " ".join(state.rng.choice(["alpha", "beta", "gamma"]) for _ in range(50))
        response = session.post(
            state.base + "/tasks",
            json={"type": "wordcount", "args": {"text": text}},
            timeout=60,
        )
        if response.status_code == 202:
            state.created.append(response.json()["task_id"])
        return response.status_code
    if name == "list":
        return session.get(state.base + "/tasks?page_size=20", timeout=60).status_code
    task_id = state.rng.choice(state.created[-50:])
    path = "/tasks/status/" if name == "status" else "/tasks/completed/"
    return session.get(f"{state.base}{path}{task_id}", timeout=60).status_code


def measure(backend: common.Backend, args) -> dict:
    from tasks.models import FINISHED, Status, Task

    users = backend.users("load-", args.users)
    stack = backend.stack(web_workers=args.web_workers, web_threads=4, worker_class="gthread")
    stack.start_web()
    stack.start_cluster()
    try:
        tokens = client.tokens(users)
        result = client.run(
            stack.base,
            tokens,
            PLAN,
            request,
            args.seconds,
            processes=args.client_procs,
            threads=args.client_threads,
        )
        ids = [task_id for _, task_id in result.created]
        unfinished = Task.objects.filter(pk__in=ids).exclude(status__in=FINISHED)
        started = time.monotonic()
        while unfinished.exists() and time.monotonic() - started < args.drain_timeout:
            time.sleep(0.5)
        by_status = {
            status: Task.objects.filter(pk__in=ids, status=status).count()
            for status in Status.values
        }
    finally:
        stack.stop()
    logs = stack.all_logs()
    overall = client.summary(result.samples, result.seconds)
    return {
        "overall": overall,
        "kinds": {name: client.summary(result.samples, result.seconds, name) for _, name in PLAN},
        "created": len(ids),
        "by_status": by_status,
        "drain_seconds": time.monotonic() - started,
        "locked": logs.count("database is locked"),
        "tracebacks": logs.count("Traceback"),
    }


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--web-workers", type=int, default=4)
    p.add_argument("--q-workers", type=int, default=2)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--client-threads", type=int, default=8)
    p.add_argument(
        "--drain-timeout", type=float, default=300.0, help="Most seconds to wait for the tasks."
    )
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(args, lambda backend: measure(backend, args), Q_WORKERS=str(args.q_workers))
        return
    results = common.run_backends(args, argv)
    rows, kind_rows, failed = [], [], False
    for backend, r in results.items():
        o, s = r["overall"], r["by_status"]
        terminal = s["completed"] + s["failed"] + s["cancelled"]
        rows.append(
            [
                common.BACKENDS[backend],
                o["requests"],
                o["rps"],
                o["p50_ms"],
                o["p99_ms"],
                o["errors_5xx"],
                o["errors_other"],
                r["locked"],
                r["tracebacks"],
                r["created"],
                s["completed"],
                r["created"] - terminal,
            ]
        )
        for name, k in r["kinds"].items():
            kind_rows.append(
                [common.BACKENDS[backend], name, k["requests"], k["p50_ms"], k["p99_ms"]]
            )
        failed |= bool(
            o["errors_5xx"] or r["locked"] or r["tracebacks"] or r["created"] != s["completed"]
        )
    print(
        f"\nLoad: {args.users} users, {args.client_procs} x {args.client_threads} clients, "
        f"{args.seconds:g} s; gunicorn gthread {args.web_workers} workers x 4 threads; "
        f"qcluster {args.q_workers} workers; mix create:status:list:completed = 2:5:2:1\n"
    )
    print(
        common.table(
            [
                "backend",
                "requests",
                "req/s",
                "p50 ms",
                "p99 ms",
                "5xx",
                "other errors",
                "'database is locked'",
                "tracebacks",
                "tasks created",
                "completed",
                "not terminal",
            ],
            rows,
        )
    )
    print()
    print(common.table(["backend", "request", "count", "p50 ms", "p99 ms"], kind_rows))
    if failed:
        raise SystemExit("\nFAILED: errors, locks, tracebacks or tasks that did not complete.")


if __name__ == "__main__":
    main(sys.argv)
