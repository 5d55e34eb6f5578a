from django.urls import re_path

from .views import DeliveryViewSet, WebhookViewSet

# With and without a trailing slash, as every route (tasks.api.urls).
ID = r"(?P<pk>[^/]+)"
# Two ids: named apart, so the schema shows each as its own parameter.
WEBHOOK = r"(?P<webhook_id>[^/]+)"
DELIVERY = r"(?P<delivery_id>[^/]+)"

webhook_list = WebhookViewSet.as_view({"get": "list", "post": "create"})
webhook_detail = WebhookViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
)
delivery_list = DeliveryViewSet.as_view({"get": "list"})
delivery_redeliver = DeliveryViewSet.as_view({"post": "redeliver"})

urlpatterns = [
    re_path(r"^webhooks/?$", webhook_list, name="webhook-list"),
    re_path(rf"^webhooks/{ID}/deliveries/?$", delivery_list, name="webhook-deliveries"),
    re_path(
        rf"^webhooks/{WEBHOOK}/deliveries/{DELIVERY}/redeliver/?$",
        delivery_redeliver,
        name="webhook-redeliver",
    ),
    re_path(rf"^webhooks/{ID}/?$", webhook_detail, name="webhook-detail"),
]
