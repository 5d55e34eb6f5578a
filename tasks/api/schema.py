"""The typed create body of the OpenAPI schema, generated from the registry.

drf-spectacular sees `args` as any JSON object. This hook replaces the body
of `POST /tasks` with one variant per registered type, discriminated by
`type`, whose `args` is that type's argument schema (the JSON Schema
/tasks/types serves, built from the serializer that validates them), and
adds an example per type. Generated clients can then check `args`.
It also lists the task endpoints first.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .. import registry

CREATE_OPERATION = "tasks_create"
GENERIC_BODY = "TaskCreateRequest"


def component_name(type_name: str, suffix: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", type_name)
    return "".join(word[:1].upper() + word[1:] for word in words if word) + suffix


def openapi_schema(schema: Any) -> Any:
    """A JSON Schema of the registry as OpenAPI 3.0 says it: `nullable: true`
    instead of `anyOf [..., {"type": "null"}]`, which 3.0 does not know."""
    if isinstance(schema, list):
        return [openapi_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    variants = schema.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants and len(variants) == 2:
        (other,) = [v for v in variants if v != {"type": "null"}]
        del schema["anyOf"]
        schema = {**openapi_schema(other), **schema, "nullable": True}
    for key in ("properties",):
        if isinstance(schema.get(key), dict):
            schema[key] = {name: openapi_schema(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), (dict, list)):
            schema[key] = openapi_schema(schema[key])
    return schema


def example_args(task_type: registry.TaskType) -> dict[str, Any]:
    """The type's own example, or one made up from its argument schema."""
    if task_type.example is not None:
        return dict(task_type.example)
    return made_up_value(task_type.args_schema())


FORMAT_EXAMPLES = {
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "date-time": "2030-01-01T00:00:00Z",
    "date": "2030-01-01",
    "time": "12:00:00",
    "decimal": "1.0",
}


def made_up_value(schema: dict[str, Any]) -> Any:
    """A value that fits `schema`: defaults, enum members and bounds first."""
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "anyOf" in schema:
        return made_up_value(schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: made_up_value(properties[name])
            for name in schema.get("required", [])
            if name in properties
        }
    if kind == "array":
        return [made_up_value(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        value = schema.get("minimum", 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "string":
        if schema.get("format") in FORMAT_EXAMPLES:
            return FORMAT_EXAMPLES[schema["format"]]
        return "x" * max(1, schema.get("minLength", 1))
    return {}


def typed_task_bodies(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    operation = _operation(result, CREATE_OPERATION)
    generic = schemas.get(GENERIC_BODY)
    if operation is None or generic is None:
        return result
    variants: dict[str, str] = {}
    examples: dict[str, Any] = {}
    for task_type in registry.all_types():
        name = component_name(task_type.name, "TaskCreateRequest")
        args_name = component_name(task_type.name, "Args")
        while name in schemas or args_name in schemas:  # two names spelled alike
            name, args_name = name + "_", args_name + "_"
        args_schema = openapi_schema(task_type.args_schema())
        schemas[args_name] = {**args_schema, "description": f"`args` of `{task_type.name}`."}
        variant = copy.deepcopy(generic)
        variant["description"] = task_type.description or f"A `{task_type.name}` task."
        variant["properties"]["type"] = {"type": "string", "enum": [task_type.name]}
        variant["properties"]["args"] = {"$ref": f"#/components/schemas/{args_name}"}
        variant["required"] = ["type", *(["args"] if args_schema.get("required") else [])]
        schemas[name] = variant
        variants[task_type.name] = f"#/components/schemas/{name}"
        examples[task_type.name] = {
            "summary": f"A {task_type.name} task",
            "value": {"type": task_type.name, "args": example_args(task_type)},
        }
    body = {
        "oneOf": [{"$ref": ref} for ref in variants.values()],
        "discriminator": {"propertyName": "type", "mapping": variants},
    }
    for media in operation.get("requestBody", {}).get("content", {}).values():
        media["schema"] = body
        media["examples"] = examples
    operation["description"] = (
        operation.get("description", "")
        + "\n\nThe body's `args` depend on its `type`: one variant per task type. "
        "An empty body (no `type`) starts the demo task."
    ).strip()
    if not _referenced(result, GENERIC_BODY):
        del schemas[GENERIC_BODY]
    result["paths"] = dict(
        sorted(result.get("paths", {}).items(), key=lambda item: not _is_task_path(item[0]))
    )
    return result


def _is_task_path(path: str) -> bool:
    return path == "/tasks" or path.startswith("/tasks/")


def _operation(result, operation_id: str) -> dict | None:
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return operation
    return None


def _referenced(result, component: str) -> bool:
    return f'"#/components/schemas/{component}"' in json.dumps(result, default=str)
