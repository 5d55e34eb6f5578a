"""Drain throughput against Celery: N no-op tasks through Celery on Redis
versus N no-op tasks through the project on PostgreSQL (the task table is
its queue; no Redis), the same number of worker processes, one after the
other in one run.

Each side is filled while no worker runs, then its workers start and drain
it; throughput counts from the first task's completion to the last one's,
so start-up is not in the figure. Celery runs `celery worker` with the
prefork pool (`--concurrency` = workers; gossip, mingle and heartbeats off)
and otherwise its defaults: JSON messages, a prefetch of 4 per process, a
message acknowledged just before its task runs. It stores each result in
its Redis result backend, because that is how one learns a Celery task's
result, which the project keeps in its task row; the completion time is the
`date_done` Celery stores with the result. The project's side is
`bench.drain`'s project mode: tasks submitted with `services.submit_task`,
drained by `manage.py qcluster`; completion is `finished_at` in its rows.

    python -m bench.celery_drain                 # 2,000 tasks, 2 workers
    python -m bench.celery_drain --tasks 300 --workers 4
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

from bench import common
from bench.drain import add_cluster_arguments, alternate, cluster_settings, drain

# Keys per EXISTS/MGET command, so a large run never sends one huge command.
CHUNK = 5000


def celery_drain(workdir: Path, redis_url: str, tasks: int, workers: int) -> dict:
    import redis

    # A key prefix of this run's own: everything Celery writes lives under it.
    # Set once per process: the app reads it when first imported, and every
    # round's worker must use the same.
    prefix = os.environ.setdefault(
        "BENCH_CELERY_KEY_PREFIX", f"bench-celery-{uuid.uuid4().hex[:8]}:"
    )
    os.environ["BENCH_CELERY_REDIS_URL"] = redis_url
    from bench.celery_app import app, noop  # reads the two variables above

    client = redis.Redis.from_url(redis_url)
    worker = None
    log = workdir / "celery-worker.log"
    try:
        started = time.monotonic()
        keys = [app.backend.get_key_for_task(noop.delay().id) for _ in range(tasks)]
        fill_seconds = time.monotonic() - started
        chunks = [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]

        with log.open("ab") as out:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "--app",
                    "bench.celery_app",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(workers),
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "WARNING",
                    "--hostname",
                    f"{prefix.rstrip(':')}@%h",
                ],
                cwd=common.ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def all_done() -> bool:
            if worker.poll() is not None:
                raise SystemExit("the Celery worker exited:\n" + log.read_text()[-5000:])
            return sum(client.exists(*chunk) for chunk in chunks) >= tasks

        try:
            common.wait_until(all_done, 300, f"{tasks} Celery tasks", 0.2)
        except SystemExit as exc:
            raise SystemExit(f"{exc}; the worker's log:\n{log.read_text()[-5000:]}") from None
        metas = [json.loads(raw) for chunk in chunks for raw in client.mget(chunk)]
    finally:
        if worker is not None:
            stop(worker)
        # Only this run's keys: the queue, its bindings, the results.
        for batch in _batches(client.scan_iter(match=prefix + "*", count=1000), 1000):
            client.delete(*batch)
        client.close()

    failed = [m for m in metas if m["status"] != "SUCCESS"]
    if failed:
        raise SystemExit(f"{len(failed)} Celery tasks did not succeed, e.g. {failed[0]}")
    done = sorted(datetime.fromisoformat(m["date_done"]) for m in metas)
    seconds = (done[-1] - done[0]).total_seconds()
    return {
        "tasks_per_s": (tasks - 1) / seconds if seconds else float("nan"),
        "seconds": seconds,
        "fill_seconds": fill_seconds,
        "tracebacks": log.read_text(errors="replace").count("Traceback"),
    }


def stop(worker: subprocess.Popen) -> None:
    """Celery's warm shutdown (SIGTERM to the main process), then SIGKILL to all."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(args) -> None:
    def body(backend: common.Backend) -> dict:
        return alternate(
            args.rounds,
            {
                "celery": lambda: celery_drain(
                    backend.workdir, args.redis_url, args.tasks, args.workers
                ),
                "project": lambda: drain(backend, "project", args.tasks),
            },
        )

    # The same cluster settings as bench.drain.
    common.child(args, body, **cluster_settings(args))


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.set_defaults(backend="pg")
    add_cluster_arguments(p)
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5"),
        help="Celery's broker and result backend (only keys under a prefix of the run's "
        "own are written, and deleted at the end).",
    )
    args = p.parse_args(argv[1:])
    if args.backend != "pg":
        p.error("the comparison with Celery runs on PostgreSQL only (--backend pg)")
    if args.child:
        run(args)
        return
    r = common.run_backends(args, argv)["pg"]
    celery, project = r["celery"], r["project"]
    print(
        f"\nDrain throughput: {args.tasks} no-op tasks, first to last completion, "
        f"best of {args.rounds} alternating rounds each\n"
    )
    print(
        common.table(
            [
                "backend",
                "workers",
                "tasks",
                "Celery (Redis, prefork) /s",
                "project (PostgreSQL) /s",
                "ratio project/Celery (target >= 1.2)",
            ],
            [
                [
                    common.BACKENDS["pg"],
                    args.workers,
                    args.tasks,
                    celery["tasks_per_s"],
                    project["tasks_per_s"],
                    common.ratio(project["tasks_per_s"], celery["tasks_per_s"]),
                ]
            ],
        )
    )
    print(
        "\nCelery: completion is `date_done` from its Redis result backend (one SET + PUBLISH"
        "\nper task, stored by the worker). Project: `finished_at` in its task rows."
        f"\nTracebacks in the logs: Celery {celery['tracebacks']}, project {project['tracebacks']}."
    )


if __name__ == "__main__":
    main(sys.argv)
