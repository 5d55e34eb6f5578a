"""Task types the test suite needs: failures, crashes, slow and recording tasks.

Installed only by the tests (and by the end-to-end processes through EXTRA_APPS).
"""

import os
import time
from pathlib import Path

from rest_framework import serializers

from tasks.registry import task_type


class FlakyArgs(serializers.Serializer):
    fail_times = serializers.IntegerField(min_value=0, max_value=10)


@task_type("test.flaky", args=FlakyArgs, max_retries=3, description="Fails its first attempts.")
def flaky(ctx, fail_times: int):
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


class FailArgs(serializers.Serializer):
    message = serializers.CharField(default="boom")


@task_type("test.fail", args=FailArgs, description="Always raises ValueError.")
def fail(ctx, message: str):
    raise ValueError(message)


class SleepArgs(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=3600)


@task_type(
    "test.sleep",
    args=SleepArgs,
    timeout=60,
    description="Sleeps without checking for cancellation.",
)
def plain_sleep(ctx, seconds: float):
    time.sleep(seconds)
    return {"slept": seconds}


@task_type("test.crash", description="Kills its own worker process.")
def crash(ctx):
    os._exit(1)


class RecordArgs(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=600, default=0)


@task_type(
    "test.record",
    args=RecordArgs,
    description="Sleeps, then appends task:attempt to $TEST_RECORD_FILE.",
)
def record(ctx, seconds: float):
    ctx.sleep(seconds)
    line = f"{ctx.task_id}:{ctx.attempt}\n"
    path = os.environ.get("TEST_RECORD_FILE")
    if path:
        with Path(path).open("a") as fh:
            fh.write(line)
    return {"task": ctx.task_id, "attempt": ctx.attempt}


@task_type("test.big_output", description="Returns an output over any small limit.")
def big_output(ctx):
    return {"data": "x" * 200_000}


class EchoArgs(serializers.Serializer):
    payload = serializers.JSONField(help_text="Any JSON; returned as the output.")


@task_type("test.echo", args=EchoArgs, description="Returns its free-form JSON payload.")
def echo(ctx, payload):
    return {"payload": payload}


class StubbornArgs(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=3600)


@task_type(
    "test.stubborn",
    args=StubbornArgs,
    timeout=60,
    description="Sleeps and swallows every exception, its timeout too.",
)
def stubborn(ctx, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except BaseException:
            # Swallows django-q2's timeout (a SystemExit) like code stuck
            # where no exception reaches: only stopping the process ends it.
            continue
    return {"slept": seconds}


class HoldArgs(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=600, default=0)


def _hold(ctx, seconds: float):
    """Sleep (checking for cancellation), then report when and where it ran."""
    started = time.time()
    ctx.sleep(seconds)
    return {"task": ctx.task_id, "started": started, "finished": time.time(), "pid": os.getpid()}


# Types with the queue and limit options, for the claim's tests.
task_type(
    "test.limited",
    args=HoldArgs,
    concurrency=1,
    description="At most one runs at once, across every cluster.",
)(_hold)
task_type(
    "test.keyed",
    args=HoldArgs,
    key_concurrency=1,
    description="At most one per concurrency_key runs at once.",
)(_hold)
task_type(
    "test.reports",
    args=HoldArgs,
    queue="reports",
    description="Waits in the `reports` queue.",
)(_hold)
task_type("test.hold", args=HoldArgs, description="Sleeps, then says when and where it ran.")(_hold)


class JoinArgs(serializers.Serializer):
    label = serializers.CharField(max_length=100)


@task_type(
    "test.join",
    args=JoinArgs,
    description="Returns its label and the outputs of the tasks it depends on.",
)
def join(ctx, label: str):
    outputs = ctx.dependency_outputs
    return {"label": label, "parents": {str(k): v for k, v in sorted(outputs.items())}}


class LogArgs(serializers.Serializer):
    lines = serializers.IntegerField(min_value=0, max_value=100_000)
    fail = serializers.BooleanField(default=False)
    pause = serializers.FloatField(min_value=0, max_value=60, default=0)


@task_type("test.log", args=LogArgs, description="Writes `lines` log lines, then maybe fails.")
def write_log(ctx, lines: int, fail: bool, pause: float):
    for n in range(1, lines + 1):
        ctx.log("line %d of attempt %d", n, ctx.attempt)
        if pause:
            ctx.sleep(pause)
    if fail:
        raise RuntimeError("failed after logging")
    return {"lines": lines}
