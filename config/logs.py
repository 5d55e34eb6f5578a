"""What every log line says about where it comes from, and the JSON format.

A request's lines carry its request id (the client's X-Request-ID when it
sends a sane one, else a new one; echoed in the response). A worker's lines
carry the task id and attempt it runs. Both live in context variables, set
where the request or the attempt starts, and a logging filter copies them
onto each record, so no call to the logger has to pass them.
LOG_FORMAT=json prints each record as one JSON object per line.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.core.signals import request_finished

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id: ContextVar[int | None] = ContextVar("task_id", default=None)
attempt: ContextVar[int | None] = ContextVar("attempt", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only if it is short printable ASCII, so it cannot
# forge log lines or grow them without bound.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,100}")

CONTEXT_FIELDS = ("request_id", "task_id", "attempt")
GUNICORN_REQUEST_ID = "{x-request-id}o"
DJANGO_Q_TASK_NAME = re.compile(r"\btask-(\d+)-attempt-(\d+)\b")


class ContextFilter(logging.Filter):
    """Copies the request id, task id and attempt of the current context onto
    each record (None where there is none), without dropping any record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("request_id", request_id), ("task_id", task_id), ("attempt", attempt)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        # gunicorn writes its access line after the request's context is
        # gone; the id is still in the response headers it logs.
        if record.request_id is None and isinstance(record.args, Mapping):  # type: ignore[attr-defined]
            record.request_id = record.args.get(GUNICORN_REQUEST_ID)
        # django-q2 logs about an attempt outside it, by the name our broker
        # gives it (tasks.cluster): "task-<id>-attempt-<n>".
        if record.task_id is None and record.name == "django-q":  # type: ignore[attr-defined]
            named = DJANGO_Q_TASK_NAME.search(record.getMessage())
            if named:
                record.task_id, record.attempt = int(named[1]), int(named[2])
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context
    fields that are set, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a message argument may be any object.
        return json.dumps(line, default=str, ensure_ascii=False)


def new_request_id(client_value: str | None) -> str:
    if client_value and SANE_REQUEST_ID.fullmatch(client_value):
        return client_value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in the chain: the request's id is set before anything logs, and
    stays set for Django's own line about the response, which is written
    after the middleware returns; the request_finished signal clears it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        value = new_request_id(request.headers.get(REQUEST_ID_HEADER))
        request_id.set(value)
        request.request_id = value
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = value
        return response


def clear_request_id(**kwargs: Any) -> None:
    request_id.set(None)


request_finished.connect(clear_request_id, dispatch_uid="config.logs.clear_request_id")


@contextlib.contextmanager
def task_context(*, task: int, attempt_number: int) -> Iterator[None]:
    """Lines logged inside name this task and attempt."""
    task_token = task_id.set(task)
    attempt_token = attempt.set(attempt_number)
    try:
        yield
    finally:
        task_id.reset(task_token)
        attempt.reset(attempt_token)


def names_its_task(func: Callable[..., Any]) -> Callable[..., Any]:
    """Runs `func(task_id, attempt, ...)` inside task_context."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs).arguments
        with task_context(task=bound["task_id"], attempt_number=bound["attempt"]):
            return func(*args, **kwargs)

    return wrapper
