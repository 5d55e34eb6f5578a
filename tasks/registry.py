"""Task types: a name mapped to a plain function, its argument schema and defaults.

A type is registered with the `task_type` decorator in a module named `jobs.py`
of any installed app; those modules are imported when the app registry is
ready, so adding a type never touches this package.

    from rest_framework import serializers
    from tasks.registry import task_type

    class ResizeArgs(serializers.Serializer):
        url = serializers.URLField()

    @task_type("resize", args=ResizeArgs, timeout=120, max_retries=2,
               queue="media", concurrency=4)
    def resize(ctx, url):
        ctx.progress(50, "downloading")
        ...
        return {"width": 100}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from rest_framework import serializers

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
DURATION = re.compile(r"\s*([1-9][0-9]{0,6})\s*([smhdw])\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_retention(value: str | None) -> timedelta | None:
    """A retention such as "30d", "12h", "90m", "3600s" or "2w"; None for
    empty (keep forever). ValueError for anything else."""
    if value is None or value == "":
        return None
    match = DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"Retention {value!r}: use a whole number and a unit, s m h d or w (e.g. '30d')."
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


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
    # Which queue its tasks wait in, and its global limits (None: no limit):
    # tasks of the type running at once, and those sharing a concurrency key.
    queue: str = "default"
    concurrency: int | None = None
    key_concurrency: int | None = None
    # Internal types run on workers but are neither listed nor accepted from
    # requests (the django.tasks bridge: tasks.django_tasks).
    internal: bool = False
    # How long its finished tasks are kept (None: TASK_RETENTION applies).
    retention: timedelta | None = None
    # Valid arguments shown in the API schema's examples (None: made up
    # from the argument schema, see tasks.api.schema).
    example: dict[str, Any] | None = None

    @property
    def is_limited(self) -> bool:
        return self.concurrency is not None or self.key_concurrency is not None

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Return the validated arguments or raise a DRF ValidationError."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise serializers.ValidationError({"args": ["Expected a JSON object."]})
        # One serializer for both checks: building one copies all its fields.
        serializer = self.args_serializer(data=args)
        unknown = sorted(set(args) - set(serializer.fields))
        if unknown:
            raise serializers.ValidationError(
                {"args": {key: ["Unknown argument."] for key in unknown}}
            )
        if not serializer.is_valid():
            raise serializers.ValidationError({"args": serializer.errors})
        return dict(serializer.validated_data)

    def args_schema(self) -> dict[str, Any]:
        """The JSON Schema of the arguments, built from the serializer that
        validates them (so the catalogue cannot drift from validation)."""
        return serializer_schema(self.args_serializer())


# --- JSON Schema from a serializer ---------------------------------------------
# Checked most specific first: EmailField is a CharField, and so on.
_FORMATS: list[tuple[type, dict[str, Any]]] = [
    (serializers.EmailField, {"type": "string", "format": "email"}),
    (serializers.URLField, {"type": "string", "format": "uri"}),
    (serializers.UUIDField, {"type": "string", "format": "uuid"}),
    (serializers.DateTimeField, {"type": "string", "format": "date-time"}),
    (serializers.DateField, {"type": "string", "format": "date"}),
    (serializers.TimeField, {"type": "string", "format": "time"}),
    (serializers.DurationField, {"type": "string"}),
    (serializers.CharField, {"type": "string"}),
    (serializers.BooleanField, {"type": "boolean"}),
    (serializers.IntegerField, {"type": "integer"}),
    (serializers.FloatField, {"type": "number"}),
    (serializers.DecimalField, {"type": "string", "format": "decimal"}),
    (serializers.DictField, {"type": "object"}),
    (serializers.JSONField, {}),
]


def serializer_schema(serializer: serializers.Serializer) -> dict[str, Any]:
    """JSON Schema of a serializer's writable fields. Unknown keys are refused
    by `validate_args`, hence `additionalProperties: false`."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        properties[name] = field_schema(field)
        if field.required:
            required.append(name)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def field_schema(field: serializers.Field) -> dict[str, Any]:
    """JSON Schema of one serializer field, with its limits, default and help text."""
    if isinstance(field, serializers.Serializer):
        schema = serializer_schema(field)
    elif isinstance(field, serializers.ListSerializer):
        schema = {"type": "array", "items": field_schema(field.child)} if field.child else {}
    elif isinstance(field, serializers.ListField):
        schema = {"type": "array", "items": field_schema(field.child)}
        _bounds(schema, field, min_length="minItems", max_length="maxItems")
    elif isinstance(field, serializers.ChoiceField):
        schema = {"enum": list(field.choices)}
    else:
        schema = next((dict(fmt) for cls, fmt in _FORMATS if isinstance(field, cls)), {})
        # DictField's default child (any value) says nothing worth a schema.
        if isinstance(field, serializers.DictField) and type(field.child).__name__ != (
            "_UnvalidatedField"
        ):
            schema["additionalProperties"] = field_schema(field.child)
        if isinstance(field, serializers.CharField):
            _bounds(schema, field, min_length="minLength", max_length="maxLength")
            if not field.allow_blank and "minLength" not in schema:
                schema["minLength"] = 1
        if isinstance(field, (serializers.IntegerField, serializers.FloatField)):
            _bounds(schema, field, min_value="minimum", max_value="maximum")
    if getattr(field, "allow_null", False):
        schema = {"anyOf": [schema, {"type": "null"}]}
    if field.default is not serializers.empty and not callable(field.default):
        schema["default"] = field.default
    if field.help_text:
        schema["description"] = str(field.help_text)
    return schema


def _bounds(schema: dict[str, Any], field: serializers.Field, **names: str) -> None:
    for attr, key in names.items():
        value = getattr(field, attr, None)
        if value is not None:
            schema[key] = value


_registry: dict[str, TaskType] = {}


def task_type(
    name: str,
    *,
    args: type[serializers.Serializer] = EmptyArgs,
    description: str = "",
    timeout: int | None = None,
    max_retries: int = 0,
    queue: str = "default",
    concurrency: int | None = None,
    key_concurrency: int | None = None,
    internal: bool = False,
    retention: str | None = None,
    example: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `func(ctx, **args)` as the task type `name`.

    `queue` names the queue its tasks wait in (a cluster serves the queues in
    Q_QUEUES). `concurrency` caps how many of its tasks run at once across
    every cluster; `key_concurrency` caps those sharing one request's
    `concurrency_key`. An `internal` type is only submitted by code
    (`submit_task(..., internal=True)`), never by a request. `retention`
    ("30d", "12h"...) is how long its finished tasks are kept before
    housekeeping purges them (default: TASK_RETENTION).
    `example` is a valid `args` for the API's documentation.
    """
    for label, limit in (("concurrency", concurrency), ("key_concurrency", key_concurrency)):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{label} of task type {name!r} must be a positive integer.")
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ValueError(
            f"Queue name {queue!r} of task type {name!r}: use [A-Za-z0-9_.-]{{1,100}}."
        )

    try:
        kept = parse_retention(retention)
    except ValueError as exc:
        raise ValueError(f"Task type {name!r}: {exc}") from None

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
            queue=queue,
            concurrency=concurrency,
            key_concurrency=key_concurrency,
            internal=internal,
            retention=kept,
            example=example,
        )
        return func

    return register


def get_type(name: str) -> TaskType | None:
    """The registered type called `name` (internal ones too), or None.
    Never imports anything."""
    return _registry.get(name) if isinstance(name, str) else None


def all_types() -> list[TaskType]:
    """The types users may start (internal ones left out)."""
    return sorted((t for t in _registry.values() if not t.internal), key=lambda t: t.name)


# Queues that code submits to besides the types' own (django.tasks' queue names).
_extra_queues: set[str] = set()


def add_queue(name: str) -> None:
    """Serve `name` too on clusters that serve every queue (Q_QUEUES empty)."""
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise ValueError(f"Queue name {name!r}: use [A-Za-z0-9_.-]{{1,100}}.")
    _extra_queues.add(name)


def queue_names() -> list[str]:
    """The queues the registered types (and code, see add_queue) use, sorted."""
    return sorted({t.queue for t in _registry.values()} | _extra_queues)


def unregister(name: str) -> None:
    """Remove a type (for tests that register their own)."""
    _registry.pop(name, None)
