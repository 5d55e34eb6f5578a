"""The benchmarks' task types: nothing but the cost of the path around them.

The limited types exist only in processes started with
BENCH_LIMITED_CONCURRENCY (their `concurrency`): one limited type in a queue
makes every claim from that queue count what runs (tasks.queue), which the
benchmarks of the plain path must not pay.
"""

import os
import time

from rest_framework import serializers

from tasks.registry import task_type


@task_type("bench.noop", timeout=60, description="Does nothing; measures the task path itself.")
def noop(ctx):
    return None


class SleepArgs(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=60)


@task_type(
    "bench.sleep", args=SleepArgs, timeout=120, description="Sleeps; a task of known length."
)
def sleep_for(ctx, seconds: float):
    time.sleep(seconds)


class RecordArgs(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=60, default=0)


@task_type(
    "bench.record",
    args=RecordArgs,
    timeout=120,
    description="Sleeps (checking for cancellation), then records its side effect: "
    "one line `task attempt started finished` appended to $BENCH_RECORD_FILE.",
)
def record(ctx, seconds: float):
    started = time.time()
    ctx.sleep(seconds)
    path = os.environ.get("BENCH_RECORD_FILE")
    if path:
        # One write of one short line to a file opened for appending: lines
        # of concurrent workers never interleave.
        line = f"{ctx.task_id} {ctx.attempt} {started:.6f} {time.time():.6f}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


LIMIT = int(os.environ.get("BENCH_LIMITED_CONCURRENCY") or 0)
if LIMIT:
    task_type(
        "bench.limited",
        timeout=60,
        concurrency=LIMIT,
        description="bench.noop with a global concurrency limit.",
    )(noop)
    task_type(
        "bench.limited_record",
        args=RecordArgs,
        timeout=120,
        concurrency=LIMIT,
        description="bench.record with a global concurrency limit.",
    )(record)
