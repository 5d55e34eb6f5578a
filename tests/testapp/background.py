"""django.tasks `@task` functions the tests enqueue (tasks/django_tasks.py)."""

from django_tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> int:
    return a + b


@task(takes_context=True, priority=5, queue_name="default")
def describe(context, tag: str) -> dict:
    return {"tag": tag, "attempt": context.attempt, "id": context.task_result.id}


@task
def explode(message: str) -> None:
    raise ValueError(message)


def not_a_task() -> str:
    """A plain function: what a worker must refuse to run by its path."""
    return "ran"
