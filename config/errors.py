"""One error shape for the whole API: `{"error": "<sentence>", ...}`.

Field errors go under `"fields"`. Unknown exceptions stay 500 and are logged
with the request; their details never reach the client.
"""

from __future__ import annotations

import logging
import math

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger("config.errors")

MESSAGES = {
    status.HTTP_400_BAD_REQUEST: "The request is invalid.",
    status.HTTP_401_UNAUTHORIZED: "Authentication credentials were not provided or are invalid.",
    status.HTTP_403_FORBIDDEN: "You do not have permission to do this.",
    status.HTTP_404_NOT_FOUND: "Not found.",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Method not allowed.",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "The request body is too large.",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "Unsupported media type: send application/json.",
    status.HTTP_429_TOO_MANY_REQUESTS: "Too many requests.",
    status.HTTP_500_INTERNAL_SERVER_ERROR: "Internal server error.",
}


def error_body(message: str, **extra) -> dict:
    return {"error": message, **extra}


def _sentence(detail, fallback: str) -> str:
    if isinstance(detail, str):
        return str(detail)
    if isinstance(detail, list) and len(detail) == 1 and isinstance(detail[0], str):
        return str(detail[0])
    if isinstance(detail, dict) and "detail" in detail:
        return str(detail["detail"])
    return fallback


def api_exception_handler(exc, context):
    from tasks.services import ServiceError

    if isinstance(exc, ServiceError):
        return Response(error_body(exc.message, **exc.extra), status=exc.status)
    # Django's own exceptions keep their message (DRF would convert them too,
    # but the sentence is read from the DRF exception below).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)

    response = exception_handler(exc, context)
    if response is None:
        request = context.get("request")
        logger.exception(
            "unhandled error on %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
        )
        return Response(error_body(MESSAGES[500]), status=status.HTTP_500_INTERNAL_SERVER_ERROR)

    fallback = MESSAGES.get(response.status_code, "The request failed.")
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(_sentence(exc.detail, "Invalid input."), fields=fields)
        if isinstance(exc.detail, dict):
            response.data["error"] = "Invalid input: " + ", ".join(sorted(map(str, fields))) + "."
    elif isinstance(exc, exceptions.Throttled):
        if exc.wait:
            wait = max(1, math.ceil(exc.wait))
            response.data = error_body(
                f"Too many requests; try again in {wait} seconds.", retry_after=wait
            )
        else:
            response.data = error_body(MESSAGES[429])
    else:
        response.data = error_body(_sentence(getattr(exc, "detail", None), fallback))
    return response


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer (documentation only)."""

    error = serializers.CharField(help_text="What went wrong, as a sentence.")
    fields = serializers.DictField(  # type: ignore[assignment]  # the error body's key, not Serializer.fields
        required=False,
        help_text="Field-level errors: field name -> list of messages (or nested fields).",
    )


def json_error(request, status_code: int, message: str | None = None) -> JsonResponse:
    return JsonResponse(error_body(message or MESSAGES[status_code]), status=status_code)


def not_found(request, exception=None):
    return json_error(request, 404)


@csrf_exempt  # a POST to an unknown path is a 404, not a CSRF failure page
def unknown_route(request, *args, **kwargs):
    """The last URL pattern: unknown paths answer with the JSON error even with
    DEBUG=True, where Django would otherwise render its HTML 404 page."""
    return json_error(request, 404, "Not found: no such endpoint.")


def server_error(request):
    return json_error(request, 500)


def bad_request(request, exception=None):
    return json_error(request, 400)


def permission_denied(request, exception=None):
    return json_error(request, 403)
