"""`/webhooks`: the caller's webhooks and their deliveries."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework.response import Response

from config.errors import ErrorSerializer
from config.pagination import MAX_ID, NewestFirst, parse_id

from .. import selectors, services
from ..models import Delivery, DeliveryAttempt, Webhook
from .serializers import (
    DeliverySerializer,
    WebhookCreatedSerializer,
    WebhookSerializer,
    WebhookWriteSerializer,
)

WEBHOOK_ID = OpenApiParameter(
    "id", OpenApiTypes.INT64, OpenApiParameter.PATH, description="The webhook's id."
)
PARENT_ID = OpenApiParameter(
    "webhook_id", OpenApiTypes.INT64, OpenApiParameter.PATH, description="The webhook's id."
)
DELIVERY_ID = OpenApiParameter(
    "delivery_id", OpenApiTypes.INT64, OpenApiParameter.PATH, description="The delivery's id."
)
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description='"Webhook not found" (also for another user\'s webhook).'
)
BAD_ID = OpenApiResponse(ErrorSerializer, description="The id is not an integer.")
INVALID = OpenApiResponse(
    ErrorSerializer,
    description="Field errors: a URL that is not http(s) or resolves to a private address, "
    "unknown events or task types.",
)


def get_own_webhook(request, raw_id: str) -> Webhook:
    webhook_id = parse_id(raw_id, "webhook")
    webhook = None
    if 0 < webhook_id <= MAX_ID:
        webhook = selectors.webhook_of(user=request.user, webhook_id=webhook_id)
    if webhook is None:
        raise exceptions.NotFound("Webhook not found")
    return webhook


def get_own_delivery(request, raw_webhook_id: str, raw_id: str) -> Delivery:
    webhook = get_own_webhook(request, raw_webhook_id)
    delivery_id = parse_id(raw_id, "delivery")
    delivery = None
    if 0 < delivery_id <= MAX_ID:
        delivery = selectors.delivery_of(webhook=webhook, delivery_id=delivery_id)
    if delivery is None:
        raise exceptions.NotFound("Delivery not found")
    return delivery


def _with_attempts(deliveries):
    attempts = DeliveryAttempt.objects.order_by("-number")
    return deliveries.prefetch_related(Prefetch("attempt_log", queryset=attempts))


class WebhookViewSet(viewsets.GenericViewSet):
    """Webhooks of the authenticated user."""

    serializer_class = WebhookSerializer
    pagination_class = NewestFirst

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Webhook.objects.none()
        return selectors.webhooks_of(user=self.request.user)

    def _body(self, request, *, partial: bool) -> dict:
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        incoming = WebhookWriteSerializer(data=request.data, partial=partial)
        incoming.is_valid(raise_exception=True)
        return dict(incoming.validated_data)

    @extend_schema(
        operation_id="webhooks_list",
        tags=["webhooks"],
        summary="List your webhooks (newest first, cursor-paginated)",
        responses={
            200: WebhookSerializer(many=True),
            400: OpenApiResponse(ErrorSerializer, description="A bad cursor or page size."),
        },
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WebhookSerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        tags=["webhooks"],
        summary="Subscribe a URL to events of your tasks (the answer shows the secret once)",
        request=WebhookWriteSerializer,
        responses={
            201: WebhookCreatedSerializer,
            400: INVALID,
            429: OpenApiResponse(ErrorSerializer, description="WEBHOOK_MAX_PER_USER reached."),
        },
    )
    def create(self, request):
        body = self._body(request, partial=False)
        body.pop("active", None)
        webhook = services.create_webhook(owner=request.user, **body)
        return Response(
            WebhookCreatedSerializer(webhook).data,
            status=status.HTTP_201_CREATED,
            # It carries the secret: no cache may keep it.
            headers={"Location": f"/webhooks/{webhook.pk}", "Cache-Control": "no-store"},
        )

    @extend_schema(
        operation_id="webhooks_retrieve",
        tags=["webhooks"],
        summary="One webhook (without its secret)",
        parameters=[WEBHOOK_ID],
        responses={200: WebhookSerializer, 400: BAD_ID, 404: NOT_FOUND},
    )
    def retrieve(self, request, pk=None):
        return Response(WebhookSerializer(get_own_webhook(request, pk)).data)

    @extend_schema(
        operation_id="webhooks_partial_update",
        tags=["webhooks"],
        summary="Change a webhook's URL, events or types, or pause it",
        parameters=[WEBHOOK_ID],
        request=WebhookWriteSerializer(partial=True),
        responses={200: WebhookSerializer, 400: INVALID, 404: NOT_FOUND},
    )
    def partial_update(self, request, pk=None):
        webhook = get_own_webhook(request, pk)
        updated = services.update_webhook(webhook=webhook, **self._body(request, partial=True))
        return Response(WebhookSerializer(updated).data)

    @extend_schema(
        operation_id="webhooks_destroy",
        tags=["webhooks"],
        summary="Delete a webhook (its pending deliveries are dropped)",
        parameters=[WEBHOOK_ID],
        responses={204: None, 400: BAD_ID, 404: NOT_FOUND},
    )
    def destroy(self, request, pk=None):
        services.delete_webhook(webhook=get_own_webhook(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeliveryViewSet(viewsets.GenericViewSet):
    """Deliveries of one of the authenticated user's webhooks."""

    serializer_class = DeliverySerializer
    pagination_class = NewestFirst

    def get_queryset(self):
        return Delivery.objects.none()

    @extend_schema(
        operation_id="webhooks_deliveries",
        tags=["webhooks"],
        summary="A webhook's deliveries with their attempts (newest first, cursor-paginated)",
        parameters=[
            WEBHOOK_ID,
            OpenApiParameter(
                "state",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=Delivery.State.values,
                description="Only deliveries in this state.",
            ),
        ],
        responses={
            200: DeliverySerializer(many=True),
            400: OpenApiResponse(
                ErrorSerializer, description="A bad id, state, cursor or page size."
            ),
            404: NOT_FOUND,
        },
    )
    def list(self, request, pk=None):
        webhook = get_own_webhook(request, pk)
        state = request.query_params.get("state")
        if state is not None and state not in Delivery.State.values:
            raise exceptions.ValidationError(
                {"state": [f"One of {', '.join(Delivery.State.values)}."]}
            )
        deliveries = selectors.deliveries_of(webhook=webhook, state=state)
        page = self.paginate_queryset(_with_attempts(deliveries))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhooks_redeliver",
        tags=["webhooks"],
        summary="Send a delivery again (same webhook-id and body)",
        parameters=[PARENT_ID, DELIVERY_ID],
        request=None,
        responses={202: DeliverySerializer, 400: BAD_ID, 404: NOT_FOUND},
    )
    def redeliver(self, request, webhook_id=None, delivery_id=None):
        delivery = services.redeliver(delivery=get_own_delivery(request, webhook_id, delivery_id))
        fresh = _with_attempts(Delivery.objects.filter(pk=delivery.pk)).get()
        return Response(DeliverySerializer(fresh).data, status=status.HTTP_202_ACCEPTED)
