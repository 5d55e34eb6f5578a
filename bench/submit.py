"""Submit throughput: `POST /tasks` (validation, the owner's lock, per-user
cap, fairness turn, one row in the task table, a NOTIFY on PostgreSQL)
versus a bare DRF endpoint in the same server that only inserts one task
row, both with the same JWT authentication, through gunicorn with keep-alive
clients. Rounds alternate (bare, project, bare, project) so both see the
same machine load. No cluster runs: nothing drains.

    python -m bench.submit                    # both databases, 2 x 10 s per endpoint
    python -m bench.submit --seconds 2 --backend sqlite
    python -m bench.submit --worker-class gthread   # compare gunicorn worker classes
"""

from __future__ import annotations

import sys

from bench import client, common

ENDPOINTS = {"bare": "/bench/insert", "project": "/tasks"}


def request(session, name: str, state) -> int:
    body = {"type": "bench.noop"} if name == "project" else {}
    # Each request as the thread's next user, so that every user's backlog
    # grows alike and none reaches the per-user cap on unfinished tasks.
    headers = {"Authorization": "Bearer " + state.next_token()}
    return session.post(
        state.base + ENDPOINTS[name], json=body, headers=headers, timeout=60
    ).status_code


def measure(backend: common.Backend, args) -> dict:
    users = {name: backend.users(f"submit-{name}-", args.users) for name in ENDPOINTS}
    stack = backend.stack(
        web_workers=args.web_workers, web_threads=args.web_threads, worker_class=args.worker_class
    )
    stack.start_web()
    try:
        tokens = {name: client.tokens(users[name]) for name in ENDPOINTS}
        samples = {name: [] for name in ENDPOINTS}
        seconds = dict.fromkeys(ENDPOINTS, 0.0)
        for _ in range(args.rounds):
            for name in ENDPOINTS:
                result = client.run(
                    stack.base,
                    tokens[name],
                    [(1, name)],
                    request,
                    args.seconds,
                    processes=args.client_procs,
                    threads=args.client_threads,
                )
                samples[name] += result.samples
                seconds[name] += result.seconds
    finally:
        stack.stop()
    out = {name: client.summary(samples[name], seconds[name]) for name in ENDPOINTS}
    logs = stack.all_logs()
    out["locked"] = logs.count("database is locked")
    out["tracebacks"] = logs.count("Traceback")
    return out


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="Length of one round.")
    p.add_argument("--rounds", type=int, default=2)
    # Enough users that none reaches the per-user cap on unfinished tasks
    # (TASK_MAX_UNFINISHED_PER_USER): no worker drains during this benchmark.
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--web-workers", type=int, default=2)
    p.add_argument("--web-threads", type=int, default=4)
    p.add_argument("--worker-class", choices=common.WORKER_CLASSES, default="asgi")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--client-threads", type=int, default=8)
    args = p.parse_args(argv[1:])
    if args.child:
        common.child(args, lambda backend: measure(backend, args))
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, r in results.items():
        bare, project = r["bare"], r["project"]
        rows.append(
            [
                common.BACKENDS[backend],
                bare["ok_rps"],
                project["ok_rps"],
                common.ratio(project["ok_rps"], bare["ok_rps"]),
                bare["p50_ms"],
                project["p50_ms"],
                bare["p99_ms"],
                project["p99_ms"],
                bare["errors_5xx"] + project["errors_5xx"],
                bare["errors_other"] + project["errors_other"],
                r["locked"],
                r["tracebacks"],
            ]
        )
    threads = f" x {args.web_threads} threads" if args.worker_class == "gthread" else ""
    print(
        f"\nSubmit throughput: gunicorn {args.worker_class}, {args.web_workers} workers{threads}; "
        f"{args.client_procs} x {args.client_threads} keep-alive clients; "
        f"{args.rounds} x {args.seconds:g} s per endpoint\n"
    )
    print(
        common.table(
            [
                "backend",
                "bare insert 2xx/s",
                "POST /tasks 2xx/s",
                "ratio (target >= 0.95)",
                "bare p50 ms",
                "tasks p50 ms",
                "bare p99 ms",
                "tasks p99 ms",
                "5xx",
                "other errors",
                "'database is locked'",
                "tracebacks",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
