"""Final touches on the generated OpenAPI schema.

Routes accept an optional trailing slash (`/tasks` and `/tasks/`); the schema
names each once, without it. Errors every operation can meet (bad body, wrong
content type, too large, missing token, database out of reach, server
error) are documented here once instead of on every view, as is the
Retry-After header of a 429 and a 503.
"""

from __future__ import annotations

from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer

from config.errors import CODES, MESSAGES

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "description": "The body of every error answer.",
    "properties": {
        "error": {"type": "string", "description": "What went wrong, as a sentence."},
        "code": {
            "type": "string",
            "description": "What went wrong, for programs (more codes may be added):\n"
            + "\n".join(f"- `{code}`: {meaning}" for code, meaning in CODES.items()),
            "example": "not_found",
        },
        "fields": {
            "type": "object",
            "additionalProperties": {},
            "description": "Field-level errors: field name -> messages (or nested fields).",
        },
    },
    "required": ["error", "code"],
}


def _error_response(code: int) -> dict:
    return {
        "description": MESSAGES[code],
        "content": {"application/json": {"schema": ERROR_REF}},
    }


def finish_schema(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    paths = {}
    for path, item in result.get("paths", {}).items():
        paths[path.rstrip("/") or "/"] = item
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            codes = [500, 503]
            if operation.get("security") != [{}] and "security" in operation:
                codes.append(401)
            if method in ("post", "put", "patch"):
                codes += [400, 411, 413, 415]
            # /health documents a 503 of its own, without Retry-After.
            retry_after = ["429"] if "503" in responses else ["429", "503"]
            for code in codes:
                responses.setdefault(str(code), _error_response(code))
            for code in retry_after:
                if code in responses:
                    responses[code].setdefault("headers", {})["Retry-After"] = {
                        "description": "Seconds to wait before trying again.",
                        "schema": {"type": "integer"},
                    }
    result["paths"] = paths
    return result


class SchemaView(SpectacularAPIView):
    """`/api/schema`: the schema in YAML or JSON, and its errors (a wrong
    method, an unknown ?format=) in JSON like every other error: the
    negotiated OpenAPI renderer would write them as YAML."""

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
