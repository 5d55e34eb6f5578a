import django_tasks
from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

# django-tasks (like Django 6's django.tasks) reads its backends from a
# setting named TASKS, which in this project has always held the task
# runner's own settings; it reads TASK_BACKENDS instead. Set here because
# this module is imported before any app's models or task modules, so before
# the first `@task` asks for a backend.
django_tasks.task_backends.settings_name = "TASK_BACKENDS"


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        # Every installed app may define task types in its own jobs.py.
        autodiscover_modules("jobs")
        from . import cluster
        from . import django_tasks as django_tasks_backend

        django_tasks_backend.register_queues()
        cluster.connect_worker_signals()
        from . import checks  # noqa: F401  (registers the system checks)
