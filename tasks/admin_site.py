"""The admin site: Django's, with the operators' dashboard (tasks/dashboard.py)
at /admin/dashboard/ and a link to it on the home page.

Installed in place of `django.contrib.admin` (INSTALLED_APPS names
TaskRunnerAdminConfig), Django's documented way to replace the default site,
so `admin.site` and every `@admin.register` keep working.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import path


class TaskRunnerAdminSite(admin.AdminSite):
    index_template = "admin/tasks/index.html"

    def get_urls(self):
        # Imported here: the site is created while apps load, before models.
        from . import dashboard

        return [
            path("dashboard/", self.admin_view(dashboard.dashboard_view), name="dashboard"),
            # JSON, so not behind admin_view (it would redirect to the login page).
            path("dashboard/live/", dashboard.dashboard_live, name="dashboard_live"),
            *super().get_urls(),
        ]


class TaskRunnerAdminConfig(AdminConfig):
    default_site = "tasks.admin_site.TaskRunnerAdminSite"
