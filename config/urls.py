from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from .errors import unknown_route
from .schema import SchemaView

urlpatterns = [
    path("admin/", admin.site.urls),
    re_path(r"^api/schema/?$", SchemaView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(
        r"^api/redoc/?$",
        # A copy of the page that loads nothing from the internet (no web fonts).
        SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
        name="redoc",
    ),
    path("", include("accounts.urls")),
    path("", include("tasks.api.urls")),
    path("", include("webhooks.api.urls")),
    # The page for users at / and its session login (browsers, not API clients).
    path("", include("web.urls")),
    # Last: any other path is a JSON 404, whatever DEBUG says.
    re_path(r"^", unknown_route, name="unknown-route"),
]

handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
