"""The admin's security: no django-q2 pages, and a throttled login.

django-q2 registers admin pages for its own tables: schedules (a form that
takes any import path, which a cluster with its scheduler on would call),
queued, successful and failed tasks (with a "resubmit" action that enqueues
the stored import path again). The project runs tasks only from its own task
table and registry, so none of them is of use, and each is a way for a staff
member to run arbitrary code. They are removed here; this app comes after
`django_q` in INSTALLED_APPS, so its registrations already happened.
"""

from __future__ import annotations

import math

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as UnownedAPIKey

from . import services
from .models import APIKey
from .throttles import login_attempt_wait


def unregister_django_q() -> None:
    for model in apps.get_app_config("django_q").get_models():
        if admin.site.is_registered(model):
            admin.site.unregister(model)


unregister_django_q()


# --- The admin's login, throttled like /login -----------------------------------


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """The admin's login form, counted against the login throttles before the
    password is checked: past the limit even the right password is refused,
    so guessing gains nothing."""

    throttled_for: int | None = None

    def clean(self):
        wait = login_attempt_wait(self.request, self.cleaned_data.get("username"))
        if wait is not None:
            self.throttled_for = max(1, math.ceil(wait))
            raise ValidationError(
                "Too many login attempts. Try again in %(seconds)d seconds.",
                code="throttled",
                params={"seconds": self.throttled_for},
            )
        return super().clean()


@login_not_required
def throttled_login(request, extra_context=None):
    """AdminSite.login, answering a throttled attempt with a 429 and Retry-After
    (the form shows why)."""
    response = AdminSite.login(admin.site, request, extra_context)
    form = (getattr(response, "context_data", None) or {}).get("form")
    wait = getattr(form, "throttled_for", None)
    if wait is not None:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


admin.site.login_form = ThrottledAdminLoginForm
# The site builds its URLs from `self.login` when the URLconf is first loaded,
# after every admin module: this instance attribute is the view served.
admin.site.login = throttled_login  # type: ignore[method-assign]


# --- API keys ---------------------------------------------------------------------

# The library's own key model has no owner and authenticates nobody here.
admin.site.unregister(UnownedAPIKey)


@admin.register(APIKey)
class OwnedAPIKeyAdmin(APIKeyModelAdmin):
    """Staff see and revoke every user's keys; a key made here is shown once,
    in the message after saving (the library's admin)."""

    # The library types these as tuples of its own lengths.
    list_display = (  # type: ignore[assignment]
        "prefix",
        "name",
        "user",
        "created",
        "last_used_at",
        "expiry_date",
        "_has_expired",
        "revoked",
    )
    list_filter = ("revoked", "created")  # type: ignore[assignment]
    search_fields = ("name", "prefix", "user__username")  # type: ignore[assignment]
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        fields = (*super().get_readonly_fields(request, obj), "last_used_at")
        # The owner is chosen once; moving a key to another user is not a thing.
        return (*fields, "user") if obj is not None else fields

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        count = 0
        for api_key in queryset.filter(revoked=False):
            services.revoke_api_key(api_key=api_key)
            count += 1
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
