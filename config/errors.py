"""One error shape for the whole API: `{"error": "<sentence>", "code": "<code>", ...}`.

`error` is for people, `code` for programs (one of CODES, stable across
releases). Field errors go under `"fields"`. Unknown exceptions stay 500 and
are logged with the request; their details never reach the client. A
database that cannot be reached for a moment (a dropped connection, a
restart, SQLite's lock held past its timeout) is no bug: a 503 with
Retry-After, which a client may retry (with an Idempotency-Key for a
submit: whether a write that failed at its commit was kept is unknown).
"""

from __future__ import annotations

import logging
import math

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger("config.errors")

# Seconds a client is asked to wait when the database could not be reached.
DATABASE_RETRY_AFTER = 1

MESSAGES = {
    status.HTTP_400_BAD_REQUEST: "The request is invalid.",
    status.HTTP_401_UNAUTHORIZED: "Authentication credentials were not provided or are invalid.",
    status.HTTP_403_FORBIDDEN: "You do not have permission to do this.",
    status.HTTP_404_NOT_FOUND: "Not found.",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Method not allowed.",
    status.HTTP_411_LENGTH_REQUIRED: "Send the request body with a Content-Length header.",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "The request body is too large.",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "Unsupported media type: send application/json.",
    status.HTTP_429_TOO_MANY_REQUESTS: "Too many requests.",
    status.HTTP_500_INTERNAL_SERVER_ERROR: "Internal server error.",
    status.HTTP_503_SERVICE_UNAVAILABLE: "The database could not be reached; try again shortly.",
}

# The machine-readable codes, and what each means.
CODES = {
    "invalid": "The request's content is invalid (see `fields`).",
    "parse_error": "The body is not JSON the service can read.",
    "not_authenticated": "No credentials were sent.",
    "authentication_failed": "The credentials are wrong, expired, revoked or of an inactive user.",
    "permission_denied": "Authenticated, but not allowed to do this.",
    "not_found": "No such resource (or it belongs to another user).",
    "method_not_allowed": "The path does not take this HTTP method.",
    "not_acceptable": "The Accept header asks for a format the service does not speak.",
    "unsupported_media_type": "The body is not application/json.",
    "too_large": "The body is larger than MAX_REQUEST_BYTES.",
    "length_required": "The body has no Content-Length, and this server needs one.",
    "throttled": "Too many requests; see Retry-After.",
    "cap_reached": "A limit on what one user may hold (unfinished tasks, API keys) is reached.",
    "conflict": "Not possible in the resource's current state.",
    "not_finished": "The task has not finished yet (202 of /tasks/completed).",
    "unavailable": "The database could not be reached for a moment (retry after Retry-After), "
    "or the service or its workers are down (503 of /health).",
    "server_error": "An unexpected error; it is logged.",
}

# The code an answer of each status gets when nothing more specific applies.
STATUS_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid",
    status.HTTP_401_UNAUTHORIZED: "not_authenticated",
    status.HTTP_403_FORBIDDEN: "permission_denied",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_409_CONFLICT: "conflict",
    status.HTTP_411_LENGTH_REQUIRED: "length_required",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "too_large",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "throttled",
    status.HTTP_500_INTERNAL_SERVER_ERROR: "server_error",
    status.HTTP_503_SERVICE_UNAVAILABLE: "unavailable",
}

# DRF's exceptions, most specific first (simplejwt's InvalidToken is an
# AuthenticationFailed, and answers with its code).
EXCEPTION_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ValidationError, "invalid"),
    (exceptions.ParseError, "parse_error"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "throttled"),
]


def code_for_status(status_code: int) -> str:
    return STATUS_CODES.get(status_code, "invalid" if status_code < 500 else "server_error")


def error_body(message: str, code: str, **extra) -> dict:
    return {"error": message, "code": code, **extra}


def _exception_code(exc: Exception, status_code: int) -> str:
    for cls, code in EXCEPTION_CODES:
        if isinstance(exc, cls):
            return code
    return code_for_status(status_code)


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
        code = exc.code or code_for_status(exc.status)
        return Response(error_body(exc.message, code, **exc.extra), status=exc.status)
    # Django's own exceptions keep their message (DRF would convert them too,
    # but the sentence is read from the DRF exception below).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)

    response = exception_handler(exc, context)
    if response is None and isinstance(exc, (OperationalError, InterfaceError)):
        request = context.get("request")
        # With its traceback: SQLite reports a missing table as an
        # OperationalError too, which no retry mends.
        logger.warning(
            "database unavailable on %s %s: %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            exc,
            exc_info=exc,
        )
        return Response(
            error_body(
                MESSAGES[status.HTTP_503_SERVICE_UNAVAILABLE],
                "unavailable",
                retry_after=DATABASE_RETRY_AFTER,
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if response is None:
        request = context.get("request")
        logger.exception(
            "unhandled error on %s %s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
        )
        return Response(
            error_body(MESSAGES[500], "server_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    fallback = MESSAGES.get(response.status_code, "The request failed.")
    code = _exception_code(exc, response.status_code)
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(_sentence(exc.detail, "Invalid input."), code, fields=fields)
        if isinstance(exc.detail, dict):
            response.data["error"] = "Invalid input: " + ", ".join(sorted(map(str, fields))) + "."
    elif isinstance(exc, exceptions.Throttled):
        if exc.wait:
            wait = max(1, math.ceil(exc.wait))
            response.data = error_body(
                f"Too many requests; try again in {wait} seconds.", code, retry_after=wait
            )
        else:
            response.data = error_body(MESSAGES[429], code)
    else:
        response.data = error_body(_sentence(getattr(exc, "detail", None), fallback), code)
    return response


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer (documentation only)."""

    error = serializers.CharField(help_text="What went wrong, as a sentence.")
    code = serializers.CharField(
        help_text="What went wrong, for programs: " + ", ".join(f"`{c}`" for c in CODES) + "."
    )
    fields = serializers.DictField(  # type: ignore[assignment]  # the error body's key, not Serializer.fields
        required=False,
        help_text="Field-level errors: field name -> list of messages (or nested fields).",
    )


def json_error(
    request, status_code: int, message: str | None = None, code: str | None = None
) -> JsonResponse:
    return JsonResponse(
        error_body(message or MESSAGES[status_code], code or code_for_status(status_code)),
        status=status_code,
    )


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
