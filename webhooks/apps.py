from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        from tasks.api.serializers import TaskDetailSerializer

        from . import outbox

        outbox.task_serializer = TaskDetailSerializer
