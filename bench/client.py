"""A small HTTP load client: processes x threads, each thread with its own
keep-alive `requests.Session`, running a plan for a fixed time.

A plan is a list of (weight, name); `request(session, name, state)` in the
calling module turns a name into one HTTP call. Every call is recorded as
(name, seconds, status code); connection errors count as status 0.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from bench import common


@dataclass
class ThreadState:
    base: str
    token: str
    rng: random.Random
    created: list[int] = field(default_factory=list)
    # All the tokens this thread may use (`token` is the first), for plans
    # that spread their requests over many users.
    tokens: list[str] = field(default_factory=list)
    _turn: int = 0

    def next_token(self) -> str:
        """The thread's tokens in turn."""
        self._turn += 1
        return self.tokens[self._turn % len(self.tokens)]


@dataclass
class Result:
    samples: list[tuple[str, float, int]]
    created: list[tuple[str, int]]  # (token, task id)
    seconds: float


def _thread(base, tokens, plan, request, duration, seed) -> tuple[list, list]:
    token = tokens[0]
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + token
    state = ThreadState(base=base, token=token, rng=random.Random(seed), tokens=tokens)
    names = [name for _, name in plan]
    weights = [weight for weight, _ in plan]
    samples = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        name = state.rng.choices(names, weights)[0]
        started = time.perf_counter()
        try:
            code = request(session, name, state)
        except requests.RequestException:
            code = 0
        samples.append((name, time.perf_counter() - started, code))
    return samples, [(token, task_id) for task_id in state.created]


def _process(base, tokens, plan, request, duration, threads, seed) -> tuple[list, list]:
    with ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(
                _thread,
                base,
                tokens[i::threads] or [tokens[i % len(tokens)]],
                plan,
                request,
                duration,
                seed * 1000 + i,
            )
            for i in range(threads)
        ]
        samples, created = [], []
        for future in futures:
            s, c = future.result()
            samples += s
            created += c
    return samples, created


def run(base, tokens, plan, request, duration, processes=2, threads=8) -> Result:
    """Drive `plan` for `duration` seconds; tokens are spread over the threads."""
    from django.db import connections

    # Forked clients must not share (and, on exit, close) this process's connections.
    connections.close_all()
    started = time.monotonic()
    with ProcessPoolExecutor(processes) as pool:
        futures = [
            pool.submit(
                _process,
                base,
                tokens[p::processes] or tokens,
                plan,
                request,
                duration,
                threads,
                p + 1,
            )
            for p in range(processes)
        ]
        samples, created = [], []
        for future in futures:
            s, c = future.result()
            samples += s
            created += c
    return Result(samples=samples, created=created, seconds=time.monotonic() - started)


def summary(samples: list[tuple[str, float, int]], seconds: float, name: str | None = None):
    chosen = [s for s in samples if name is None or s[0] == name]
    latencies = [s[1] for s in chosen]
    return {
        "requests": len(chosen),
        "rps": len(chosen) / seconds if seconds else 0.0,
        # Answered with a 2xx: what a throughput figure counts (a quick 429
        # or 400 is no work done).
        "ok_rps": sum(1 for s in chosen if 200 <= s[2] < 300) / seconds if seconds else 0.0,
        "p50_ms": 1000 * common.percentile(latencies, 50),
        "p99_ms": 1000 * common.percentile(latencies, 99),
        "errors_5xx": sum(1 for s in chosen if s[2] >= 500),
        "errors_other": sum(1 for s in chosen if s[2] == 0 or 400 <= s[2] < 500),
    }


def tokens(users: list) -> list[str]:
    """An access token per user, minted in-process with the server's signing
    key: logging in is not what a benchmark measures, and a password check
    per user is slow on purpose."""
    from rest_framework_simplejwt.tokens import RefreshToken

    return [str(RefreshToken.for_user(user).access_token) for user in users]
