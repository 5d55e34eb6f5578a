from django.urls import re_path

from .api_keys import APIKeyDetailView, APIKeyListView
from .views import LoginView, LogoutView, MeView, TokenRefreshView

urlpatterns = [
    re_path(r"^login/?$", LoginView.as_view(), name="login"),
    re_path(r"^token/refresh/?$", TokenRefreshView.as_view(), name="token-refresh"),
    re_path(r"^logout/?$", LogoutView.as_view(), name="logout"),
    re_path(r"^me/?$", MeView.as_view(), name="me"),
    re_path(r"^api-keys/?$", APIKeyListView.as_view(), name="api-key-list"),
    re_path(r"^api-keys/(?P<prefix>[^/]+)/?$", APIKeyDetailView.as_view(), name="api-key-detail"),
]
