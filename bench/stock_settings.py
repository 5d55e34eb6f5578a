"""Stock django-q2, the raw baseline: the same database settings as the
project (DATABASE_URL, SQLite's tuning, connection ages) and the same
cluster options (workers, poll, recycle, timeouts), but django-q2's own ORM
broker and none of the project's apps. Nothing here is part of the product.

    DJANGO_SETTINGS_MODULE=bench.stock_settings python manage.py qcluster
"""

from config.settings import *  # noqa: F403
from config.settings import Q_CLUSTER

INSTALLED_APPS = ["django.contrib.contenttypes", "django_q"]
MIDDLEWARE: list[str] = []
# No project URLs (they import the project's models); a cluster serves none.
ROOT_URLCONF = "bench.stock_settings"
urlpatterns: list = []
Q_CLUSTER = {key: value for key, value in Q_CLUSTER.items() if key != "broker_class"}
