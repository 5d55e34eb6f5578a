"""Python client and `taskrunner` command line for the Task Runner API."""

from .client import (
    DEFAULT_URL,
    APIError,
    AuthenticationFailed,
    Client,
    NotFound,
    Task,
    TaskRunnerError,
    Unreachable,
)

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "AuthenticationFailed",
    "Client",
    "NotFound",
    "Task",
    "TaskRunnerError",
    "Unreachable",
]
