"""The raw baseline's task: a plain function for stock django-q2's
`async_task`, importing nothing of the project."""


def noop():
    return None
