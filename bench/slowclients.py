"""Slow clients: do idle connections, slow uploads, `?wait=` long-polls and
open event streams leave `/health` and `POST /tasks` answering?

For each web tier (`--worker-class`: asgi, what `make serve` runs, and the
former gthread tier), gunicorn starts as `make serve` runs it and two
phases run on it: quiet, then with the slow clients open (a separate
process holding them on one event loop; measured once every stream is
answered, or after `--open-timeout`):

- `--idle` connections: half send part of a request line and stop, half send
  a `POST /tasks` head and part of its body, then a byte every few seconds;
- `--long-polls` concurrent `GET /tasks/{id}?wait=30` on one user's queued
  task, each asked again as soon as it is answered;
- `--streams` open `GET /events` streams, spread over a few users.

In each phase a probe asks `/health` in turn while keep-alive clients submit
(`POST /tasks`, as bench.submit does): the table gives /health and submit
p50/p99, submit throughput, and loaded/quiet ratios. No cluster runs, so
/health answers 503 (no worker): any answer counts, its time is what is
measured. A request that gets no answer within `--timeout` counts as a
timeout, at that time.

    python -m bench.slowclients                       # both tiers, both databases
    python -m bench.slowclients --backend sqlite --worker-class asgi
    python -m bench.slowclients --idle 20 --long-polls 20 --streams 50 --seconds 3
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import signal
import subprocess
import sys
import threading
import time

import requests

from bench import client, common

EVENT_USERS = 10
SUBMIT_USERS = 50


def raise_fd_limit() -> None:
    """1,400 client sockets here and as many in the server: raise the soft
    limit on open files to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# --- the slow clients (a process of their own: `--hold`) -------------------------


async def _open(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def idle(port: int, index: int, stop: asyncio.Event) -> None:
    _reader, writer = await _open(port)
    if index % 2:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    else:
        head = (
            b"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        writer.write(head + b'{"type": "bench.noop", "args": {"x": "')
    await writer.drain()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except TimeoutError:
            if index % 2 == 0:
                writer.write(b"a")  # a trickle: the upload never ends
                await writer.drain()
    writer.close()


async def long_poll(port: int, path: str, token: str, stop: asyncio.Event, answered: list) -> None:
    head = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        reader, writer = await _open(port)
        writer.write(head)
        await writer.drain()
        try:
            status_line = await reader.readline()
            if status_line:
                answered.append(status_line.split(b" ")[1])
        except (ConnectionError, IndexError):
            pass
        writer.close()


async def stream(port: int, token: str, stop: asyncio.Event, opened: list) -> None:
    reader, writer = await _open(port)
    writer.write(
        (
            "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    counted = False
    while not stop.is_set():
        try:
            data = await asyncio.wait_for(reader.read(65536), 1)
        except TimeoutError:
            continue
        if not data:
            break
        if not counted and data.startswith(b"HTTP/1.1 200"):
            opened.append(1)
            counted = True
    writer.close()


async def hold(spec: dict) -> None:
    """Open every slow client, print `ready` once all have sent what they
    send, hold them until stdin closes, then print what they saw."""
    stop = asyncio.Event()
    answered: list = []
    opened: list = []
    port = spec["port"]
    jobs = []
    for i in range(spec["idle"]):
        jobs.append(asyncio.create_task(idle(port, i, stop)))
    for _ in range(spec["long_polls"]):
        jobs.append(
            asyncio.create_task(
                long_poll(port, spec["wait_path"], spec["poll_token"], stop, answered)
            )
        )
    for i in range(spec["streams"]):
        token = spec["stream_tokens"][i % len(spec["stream_tokens"])]
        jobs.append(asyncio.create_task(stream(port, token, stop, opened)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # within the listen backlog
    # Measure the steady state: every stream answered (its 200 sent), or,
    # where that never comes (a tier whose threads are all held), a deadline.
    deadline = time.monotonic() + spec["open_timeout"]
    while len(opened) < spec["streams"] and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.wait(jobs, timeout=10)
    print(json.dumps({"streams_open": len(opened), "long_polls_answered": len(answered)}))


# --- the measurement -----------------------------------------------------------------


def submit_request(session, name: str, state) -> int:
    headers = {"Authorization": "Bearer " + state.next_token()}
    return session.post(
        state.base + "/tasks", json={"type": "bench.noop"}, headers=headers, timeout=TIMEOUT[0]
    ).status_code


TIMEOUT = [10.0]


def probe_health(base: str, seconds: float, every: float) -> list[tuple[float, int]]:
    """`/health` in turn, a new connection each time (as a load balancer asks)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status = requests.get(base + "/health", timeout=TIMEOUT[0]).status_code
        except requests.RequestException:
            status = 0
        samples.append((time.monotonic() - started, status))
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return samples


def phase(stack, tokens: list[str], args) -> dict:
    health: list[tuple[float, int]] = []
    prober = threading.Thread(
        target=lambda: health.extend(probe_health(stack.base, args.seconds, 0.05))
    )
    prober.start()
    result = client.run(
        stack.base,
        tokens,
        [(1, "submit")],
        submit_request,
        args.seconds,
        processes=args.client_procs,
        threads=args.client_threads,
    )
    prober.join()
    submit = client.summary(result.samples, result.seconds)
    times = [t for t, _ in health]
    return {
        "health_p50_ms": common.percentile(times, 50) * 1000,
        "health_p99_ms": common.percentile(times, 99) * 1000,
        "health_timeouts": sum(1 for _, status in health if status == 0),
        "health_5xx_other_than_503": sum(1 for _, s in health if s >= 500 and s != 503),
        "submit_rps": submit["ok_rps"],
        "submit_p50_ms": submit["p50_ms"],
        "submit_p99_ms": submit["p99_ms"],
        "submit_errors": submit["errors_5xx"] + submit["errors_other"],
    }


def measure(backend: common.Backend, args) -> dict:
    raise_fd_limit()
    from tasks import services

    submitters = backend.users("slow-submit-", SUBMIT_USERS)
    [poller] = backend.users("slow-poll-", 1)
    streamers = backend.users("slow-stream-", EVENT_USERS)
    waited = services.submit_task(owner=poller, type_name="bench.noop").task
    env = {
        # The streams last the whole run; their polls and keep-alives as shipped.
        "TASK_EVENTS_MAX_SECONDS": "3600",
        "TASK_MAX_UNFINISHED_PER_USER": "1000000",
    }
    out = {}
    for worker_class in args.worker_class:
        stack = backend.stack(
            env,
            web_workers=args.web_workers,
            web_threads=args.web_threads,
            worker_class=worker_class,
        )
        stack.start_web()
        holder = None
        try:
            tokens = client.tokens(submitters)
            # Warm up (imports, each thread's first connection), not measured.
            client.run(stack.base, tokens, [(1, "submit")], submit_request, 2, 1, 4)
            quiet = phase(stack, tokens, args)
            spec = {
                "port": stack.port,
                "idle": args.idle,
                "long_polls": args.long_polls,
                "streams": args.streams,
                "open_timeout": args.open_timeout,
                "wait_path": f"/tasks/{waited.pk}?wait=30",
                "poll_token": client.tokens([poller])[0],
                "stream_tokens": client.tokens(streamers),
            }
            holder = subprocess.Popen(
                [sys.executable, "-m", "bench.slowclients", "--hold", json.dumps(spec)],
                cwd=common.ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            line = holder.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"the slow clients did not open: {line!r}")
            time.sleep(args.settle)
            loaded = phase(stack, tokens, args)
            holder.stdin.close()
            held = json.loads(holder.stdout.read().strip().splitlines()[-1])
            holder.wait(30)
        finally:
            if holder and holder.poll() is None:
                holder.send_signal(signal.SIGKILL)
            stack.stop()
        logs = stack.all_logs()
        out[worker_class] = {
            "quiet": quiet,
            "loaded": loaded,
            **held,
            "tracebacks": logs.count("Traceback"),
        }
    return out


def main(argv: list[str]) -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--worker-class", nargs="+", choices=["asgi", "gthread"], default=None)
    p.add_argument("--idle", type=int, default=200)
    p.add_argument("--long-polls", type=int, default=200)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0, help="Length of each phase.")
    p.add_argument(
        "--settle", type=float, default=3.0, help="Seconds between opening and measuring."
    )
    p.add_argument("--timeout", type=float, default=10.0, help="A probe's patience.")
    p.add_argument(
        "--open-timeout",
        type=float,
        default=60.0,
        help="Longest wait for every stream to be answered before measuring.",
    )
    # `make serve`'s defaults (WEB_WORKERS, WEB_THREADS).
    p.add_argument("--web-workers", type=int, default=4)
    p.add_argument("--web-threads", type=int, default=4)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--client-threads", type=int, default=8)
    p.add_argument("--hold", help=argparse_hidden())
    args = p.parse_args(argv[1:])
    if args.hold:
        raise_fd_limit()
        asyncio.run(hold(json.loads(args.hold)))
        return
    args.worker_class = args.worker_class or ["asgi", "gthread"]
    TIMEOUT[0] = args.timeout
    if args.child:
        random.seed(0)
        common.child(args, lambda backend: measure(backend, args))
        return
    results = common.run_backends(args, argv)
    rows = []
    for backend, by_class in results.items():
        for worker_class, r in by_class.items():
            q, lo = r["quiet"], r["loaded"]
            rows.append(
                [
                    common.BACKENDS[backend],
                    worker_class,
                    q["health_p99_ms"],
                    lo["health_p50_ms"],
                    lo["health_p99_ms"],
                    lo["health_timeouts"],
                    q["submit_rps"],
                    lo["submit_rps"],
                    common.ratio(lo["submit_rps"], q["submit_rps"]),
                    q["submit_p99_ms"],
                    lo["submit_p99_ms"],
                    q["submit_errors"] + lo["submit_errors"],
                    f"{r['streams_open']}/{args.streams}",
                    r["long_polls_answered"],
                    r["tracebacks"],
                ]
            )
    print(
        f"\nSlow clients: {args.idle} idle/slow connections, {args.long_polls} ?wait=30 "
        f"long-polls, {args.streams} event streams; gunicorn {args.web_workers} workers "
        f"(gthread: x {args.web_threads} threads); {args.client_procs} x {args.client_threads} "
        f"submit clients; {args.seconds:g} s per phase; a probe's timeout {args.timeout:g} s\n"
    )
    print(
        common.table(
            [
                "backend",
                "tier",
                "quiet /health p99 ms",
                "loaded /health p50 ms",
                "loaded /health p99 ms (target < 100)",
                "/health timeouts",
                "quiet POST /tasks 2xx/s",
                "loaded POST /tasks 2xx/s",
                "ratio (target >= 0.95)",
                "quiet POST p99 ms",
                "loaded POST p99 ms (target < 100)",
                "submit errors",
                "streams open",
                "long-polls answered",
                "tracebacks",
            ],
            rows,
        )
    )


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main(sys.argv)
