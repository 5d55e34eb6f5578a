"""GET /tasks/{id}/events and GET /events: Server-Sent Events (tasks.events)."""

from __future__ import annotations

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, renderers, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from config.errors import ErrorSerializer

from .. import events
from .views import ID_PARAMETER, NOT_FOUND, get_own_task

EVENT_STREAM = "text/event-stream"

LAST_EVENT_ID = OpenApiParameter(
    "Last-Event-ID",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="The id of the last event you received: the stream resumes after it.",
)


# One event of the stream, as an EventSource parses it ("data" would clash
# with a Serializer attribute as a class field, hence inline).
STREAM_EVENT = inline_serializer(
    "StreamEvent",
    {
        "id": serializers.CharField(
            required=False, help_text="A cursor: send it back as Last-Event-ID to resume."
        ),
        "event": serializers.ChoiceField(["status", "progress", "log"], required=False),
        "data": serializers.CharField(
            required=False, help_text="The event's JSON object, as text."
        ),
        "retry": serializers.IntegerField(
            required=False, help_text="Milliseconds to wait before reconnecting."
        ),
    },
)


STREAM = OpenApiResponse(
    STREAM_EVENT,
    description="`status`, `progress` and `log` events with ids, and `: keep-alive` "
    "comments; the stream ends after TASK_EVENTS_MAX_SECONDS (a task's, after its end).",
)
BAD_CURSOR = OpenApiResponse(
    ErrorSerializer, description="A bad id, or a Last-Event-ID this server did not make."
)


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` through content negotiation; the
    stream itself is a StreamingHttpResponse, errors are JSON."""

    media_type = EVENT_STREAM
    format = "event-stream"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return renderers.JSONRenderer().render(data)


class StreamNegotiation(BaseContentNegotiation):
    """No choice to make: the stream, or a JSON error (finalize_response).
    So neither `Accept` nor DRF's `?format=` can turn a request into a 404/406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StreamSchema(AutoSchema):
    def _get_format_parameters(self):
        return []  # no `?format=`: see StreamNegotiation


class EventStreamView(APIView):
    content_negotiation_class = StreamNegotiation
    schema = StreamSchema()

    # The default classes include the session cookie, which pages in a
    # browser need here: EventSource cannot send an Authorization header.
    renderer_classes = [EventStreamRenderer, renderers.JSONRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        if not isinstance(response, StreamingHttpResponse):
            # An error: JSON, whatever the client accepts.
            request.accepted_renderer = renderers.JSONRenderer()
            request.accepted_media_type = renderers.JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @staticmethod
    def cursor(request) -> events.Cursor | None:
        raw = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id")
        if not raw:
            return None
        try:
            return events.Cursor.parse(raw)
        except events.BadCursor:
            raise exceptions.ValidationError(
                {"Last-Event-ID": ["Not an event id of this server."]}
            ) from None

    @staticmethod
    def respond(request, source: events.TaskEvents | events.OwnerEvents) -> StreamingHttpResponse:
        # Under ASGI (`make serve`) the stream is an async iterator: it waits
        # on the event loop, not in a thread, and is sent as it comes.
        served_async = isinstance(request._request, ASGIRequest)
        content = events.astream(source) if served_async else events.stream(source)
        response = StreamingHttpResponse(content, content_type=EVENT_STREAM)
        response["Cache-Control"] = "no-store"
        # A buffering proxy (nginx) would hold the events back.
        response["X-Accel-Buffering"] = "no"
        return response


class TaskEventsView(EventStreamView):
    @extend_schema(
        operation_id="tasks_events",
        tags=["tasks"],
        summary="A task's events as they happen (Server-Sent Events); ends after its end",
        parameters=[ID_PARAMETER, LAST_EVENT_ID],
        responses={(200, EVENT_STREAM): STREAM, 400: BAD_CURSOR, 404: NOT_FOUND},
    )
    def get(self, request, pk: str):
        task = get_own_task(request, pk)
        cursor = self.cursor(request)
        return self.respond(
            request, events.TaskEvents(task_id=task.pk, owner_id=task.owner_id, cursor=cursor)
        )


class OwnerEventsView(EventStreamView):
    @extend_schema(
        operation_id="events",
        tags=["tasks"],
        summary="Events of all your tasks as they happen (Server-Sent Events)",
        parameters=[LAST_EVENT_ID],
        responses={(200, EVENT_STREAM): STREAM, 400: BAD_CURSOR},
    )
    def get(self, request):
        cursor = self.cursor(request)
        return self.respond(request, events.OwnerEvents(owner_id=request.user.pk, cursor=cursor))
