"""The benchmarks' task types: nothing but the cost of the path around them."""

from tasks.registry import task_type


@task_type("bench.noop", timeout=60, description="Does nothing; measures the task path itself.")
def noop(ctx):
    return None


def raw_noop():
    """The same no-op as a plain function for raw django-q2 `async_task` (the baseline)."""
    return None
