"""Settings for the benchmarks: the project's settings, plus the bench app
(its task types, bench/jobs.py) and a URLconf with the bare-insert baseline
endpoint. Nothing here is part of the product; the raw django-q2 baseline
runs on bench/stock_settings.py instead.
"""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
ROOT_URLCONF = "bench.urls"
