"""Endpoints for operators and their tools: /health and /metrics."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpResponse
from django.utils.crypto import constant_time_compare
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import authentication, permissions, serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import APIKeyAuthentication, BearerAuthentication
from config.errors import ErrorSerializer

from .. import metrics, selectors

HEALTH_BODY = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(help_text='"ok", or "unavailable" with a 503.'),
        "checks": serializers.DictField(help_text="database and workers, each with `ok`."),
        "queues": serializers.DictField(
            allow_null=True, help_text="Per queue: runnable and delayed task counts."
        ),
        "tasks": serializers.DictField(allow_null=True, help_text="queued and in_progress counts."),
        "error": serializers.CharField(required=False, help_text="What failed (503 only)."),
        "code": serializers.CharField(required=False, help_text='"unavailable" (503 only).'),
    },
)


class AlwaysJSON(BaseContentNegotiation):
    """Load balancers and Prometheus send all sorts of Accept headers; these
    endpoints answer in one fixed format instead of 406."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class HealthView(APIView):
    """`GET /health`: 200 when the database answers and a worker is alive, else 503.

    No authentication, so it carries only booleans and counts: no host
    names, no user data.
    """

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = []
    content_negotiation_class = AlwaysJSON

    @extend_schema(
        summary="Health of the database and the workers",
        tags=["operations"],
        auth=[],
        responses={
            200: HEALTH_BODY,
            503: OpenApiResponse(HEALTH_BODY, description="The database or the workers are down."),
        },
    )
    def get(self, request):
        stale = settings.TASKS["WORKER_STALE_SECONDS"]
        database_ok = selectors.database_reachable()
        alive, queues, tasks = 0, None, None
        # Without the database nothing else can be read (the queue lives there too).
        if database_ok:
            try:
                alive = selectors.workers_alive()
                tasks = selectors.unfinished_task_counts()
                queues = selectors.queue_depths()
            except DatabaseError:
                # It answered "SELECT 1" but failed right after: still down.
                database_ok, alive, tasks = False, 0, None
        body = {
            "status": "ok",
            "checks": {
                "database": {"ok": database_ok},
                "workers": {"ok": alive > 0, "alive": alive, "stale_after_seconds": stale},
            },
            "queues": queues,
            "tasks": tasks,
        }
        failures = []
        if not database_ok:
            failures.append("the database is unreachable")
        if alive == 0:
            failures.append(f"no worker has sent a heartbeat in the last {stale:g} seconds")
        if not failures:
            return Response(body)
        sentence = "Unhealthy: " + "; ".join(failures) + "."
        return Response(
            {"error": sentence, "code": "unavailable", **body, "status": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )


class MetricsTokenAuthentication(authentication.BaseAuthentication):
    """Accepts `Authorization: Bearer <METRICS_TOKEN>`; any other bearer token
    is left to the JWT authentication that follows."""

    keyword = "Bearer"

    def authenticate(self, request):
        expected = settings.METRICS_TOKEN
        header = authentication.get_authorization_header(request).split()
        if not expected or len(header) != 2 or header[0].decode(errors="replace") != "Bearer":
            return None
        if constant_time_compare(header[1], expected.encode()):
            # No user: the scraper is not a person and may read metrics only.
            return (None, MetricsScraper())
        return None

    def authenticate_header(self, request):
        return 'Bearer realm="metrics"'


class MetricsScraper:
    """The `request.auth` of a request that presented METRICS_TOKEN."""


class CanReadMetrics(permissions.BasePermission):
    message = "Metrics are for staff users and the metrics token only."

    def has_permission(self, request, view):
        if isinstance(request.auth, MetricsScraper):
            return True
        return bool(request.user and request.user.is_staff)


class MetricsView(APIView):
    """`GET /metrics` in the Prometheus text format, for the metrics token or staff."""

    # Session too: a staff user logged into the admin can open it in a browser.
    authentication_classes = [
        MetricsTokenAuthentication,
        BearerAuthentication,
        APIKeyAuthentication,
        authentication.SessionAuthentication,
    ]
    permission_classes = [CanReadMetrics]
    throttle_classes = []
    content_negotiation_class = AlwaysJSON

    @extend_schema(
        summary="Metrics in the Prometheus text format",
        tags=["operations"],
        responses={
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Prometheus text exposition format 0.0.4: task and worker "
                "metrics, and the web tier's HTTP requests (count, latency, status) "
                "summed over every web process.",
            ),
            403: OpenApiResponse(ErrorSerializer, description="Not staff, not the metrics token."),
        },
    )
    def get(self, request):
        return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    target_class = MetricsTokenAuthentication
    name = "metricsToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The METRICS_TOKEN setting, for a Prometheus scraper.",
        }
