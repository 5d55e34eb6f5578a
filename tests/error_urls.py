"""The project's URLs plus a plain Django view that crashes (for the 500 test)."""

from django.urls import path

from config.urls import *  # noqa: F403
from config.urls import urlpatterns as project_urlpatterns


def crash(request):
    raise RuntimeError("secret internal detail")


urlpatterns = [path("crash", crash), *project_urlpatterns]
