from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        # Every installed app may define task types in its own jobs.py.
        autodiscover_modules("jobs")
        from . import cluster

        cluster.connect_worker_signals()
