"""The product's URLs plus the baseline a bare DRF endpoint gives."""

from django.urls import include, re_path

from .views import BareInsertView

urlpatterns = [
    re_path(r"^bench/insert/?$", BareInsertView.as_view(), name="bench-insert"),
    re_path(r"", include("config.urls")),
]

handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
