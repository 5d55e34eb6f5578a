"""The built-in task types."""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import Counter

from django.conf import settings
from rest_framework import serializers

from .registry import task_type

DEFAULT_TYPE = "demo"


class DemoArgs(serializers.Serializer):
    seconds = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=86400,
        help_text="How long to run; defaults to TASK_DEFAULT_SECONDS.",
    )


@task_type(
    DEFAULT_TYPE,
    args=DemoArgs,
    example={"seconds": 5},
    description="The long demo task: works for "
    "`seconds` seconds, reporting progress, then answers with a greeting.",
)
def demo(ctx, seconds: float | None = None):
    seconds = settings.TASKS["DEFAULT_SECONDS"] if seconds is None else seconds
    started = time.monotonic()
    steps = max(1, min(100, int(seconds * 4)))
    logged = 0
    for step in range(1, steps + 1):
        ctx.sleep(seconds / steps)
        percent = 100 * step / steps
        ctx.progress(percent, f"step {step} of {steps}")
        # A line per 10% (however many steps that takes).
        while logged + 10 <= percent:
            logged += 10
            ctx.log("%d%% done (step %d of %d)", logged, step, steps)
    return {"message": "Task completed", "seconds": round(time.monotonic() - started, 3)}


class PrimesArgs(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=2, max_value=50_000_000, help_text="Count the primes below this number."
    )


@task_type(
    "primes",
    args=PrimesArgs,
    timeout=600,
    example={"limit": 1_000_000},
    description="Counts the prime numbers below `limit` (a sieve, in chunks, "
    "with progress) and returns the count and the largest one.",
)
def primes(ctx, limit: int):
    # A segmented sieve keeps memory small and gives natural progress points.
    root = math.isqrt(limit - 1) + 1
    small = bytearray([1]) * (root + 1)
    small[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(root) + 1):
        if small[i]:
            small[i * i :: i] = bytearray(len(small[i * i :: i]))
    base_primes = [i for i in range(2, root + 1) if small[i]]
    count, largest = 0, None
    segment = 1 << 18
    for low in range(0, limit, segment):
        ctx.check_cancelled()
        high = min(low + segment, limit)
        sieve = bytearray([1]) * (high - low)
        for p in base_primes:
            if p * p >= high:
                break
            start = max(p * p, (low + p - 1) // p * p)
            sieve[start - low :: p] = bytearray(len(sieve[start - low :: p]))
        for i in range(max(0, 2 - low)):
            sieve[i] = 0
        found = sieve.count(1)
        if found:
            count += found
            largest = low + sieve.rindex(1)
        ctx.progress(100 * high / limit, f"sieved up to {high}")
    return {"limit": limit, "count": count, "largest": largest}


class TextArgs(serializers.Serializer):
    text = serializers.CharField(
        max_length=50_000,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The text to analyse.",
    )
    top = serializers.IntegerField(
        required=False,
        default=10,
        min_value=1,
        max_value=100,
        help_text="How many of the most common words to return.",
    )


@task_type(
    "wordcount",
    args=TextArgs,
    timeout=60,
    example={"text": "the cat sat on the mat", "top": 3},
    description="Counts the lines, words and characters of `text`, its most common "
    "words and its SHA-256.",
)
def wordcount(ctx, text: str, top: int = 10):
    words = re.findall(r"\w+", text.lower())
    ctx.progress(50, "counted words")
    return {
        "lines": len(text.splitlines()),
        "words": len(words),
        "characters": len(text),
        "most_common": Counter(words).most_common(top),
        "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
    }
