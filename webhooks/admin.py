"""The operators' view of webhooks and their deliveries, with a redeliver action."""

from django.contrib import admin, messages

from . import services
from .models import Delivery, DeliveryAttempt, Webhook


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "url", "events", "types", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "owner__username"]
    raw_id_fields = ["owner"]
    # The secret signs deliveries; operators have no need to read it.
    exclude = ["secret"]
    readonly_fields = ["created_at", "updated_at"]


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "at", "status_code", "duration_ms", "error", "response_body"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "webhook",
        "event",
        "task_id",
        "state",
        "attempts",
        "last_status_code",
        "last_attempt_at",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["state", "event"]
    search_fields = ["msg_id", "=task_id"]
    list_select_related = ["webhook"]
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]
    readonly_fields = [
        "webhook",
        "msg_id",
        "event",
        "task_id",
        "body",
        "state",
        "attempts",
        "next_attempt_at",
        "expires_at",
        "last_attempt_at",
        "last_status_code",
        "delivered_at",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Redeliver the selected deliveries")
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            services.redeliver(delivery=delivery)
            count += 1
        self.message_user(request, f"{count} deliveries will be sent again.", messages.SUCCESS)
