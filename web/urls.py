from django.urls import re_path

from .views import SessionLoginView, SessionLogoutView, page

app_name = "web"

urlpatterns = [
    re_path(r"^$", page, name="page"),
    re_path(r"^ui/login/?$", SessionLoginView.as_view(), name="login"),
    re_path(r"^ui/logout/?$", SessionLogoutView.as_view(), name="logout"),
]
