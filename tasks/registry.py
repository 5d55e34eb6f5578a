"""Task types: a name mapped to a plain function, its argument schema and defaults.

A type is registered with the `task_type` decorator in a module named `jobs.py`
of any installed app; those modules are imported when the app registry is
ready, so adding a type never touches this package.

    from rest_framework import serializers
    from tasks.registry import task_type

    class ResizeArgs(serializers.Serializer):
        url = serializers.URLField()

    @task_type("resize", args=ResizeArgs, timeout=120, max_retries=2)
    def resize(ctx, url):
        ctx.progress(50, "downloading")
        ...
        return {"width": 100}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import serializers


class EmptyArgs(serializers.Serializer):
    """For types that take no arguments."""


@dataclass(frozen=True)
class TaskType:
    name: str
    func: Callable[..., Any]
    description: str
    args_serializer: type[serializers.Serializer]
    timeout: int
    max_retries: int

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Return the validated arguments or raise a DRF ValidationError."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise serializers.ValidationError({"args": ["Expected a JSON object."]})
        unknown = sorted(set(args) - set(self.args_serializer().fields))
        if unknown:
            raise serializers.ValidationError(
                {"args": {key: ["Unknown argument."] for key in unknown}}
            )
        serializer = self.args_serializer(data=args)
        if not serializer.is_valid():
            raise serializers.ValidationError({"args": serializer.errors})
        return dict(serializer.validated_data)


_registry: dict[str, TaskType] = {}


def task_type(
    name: str,
    *,
    args: type[serializers.Serializer] = EmptyArgs,
    description: str = "",
    timeout: int | None = None,
    max_retries: int = 0,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `func(ctx, **args)` as the task type `name`."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in _registry and _registry[name].func is not func:
            raise ValueError(f"Task type {name!r} is already registered.")
        _registry[name] = TaskType(
            name=name,
            func=func,
            description=description or (func.__doc__ or "").strip(),
            args_serializer=args,
            timeout=timeout or settings.TASKS["DEFAULT_TIMEOUT"],
            max_retries=max_retries,
        )
        return func

    return register


def get_type(name: str) -> TaskType | None:
    """The registered type called `name`, or None. Never imports anything."""
    return _registry.get(name) if isinstance(name, str) else None


def all_types() -> list[TaskType]:
    return sorted(_registry.values(), key=lambda t: t.name)


def unregister(name: str) -> None:
    """Remove a type (for tests that register their own)."""
    _registry.pop(name, None)
