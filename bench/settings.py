"""Settings for the benchmarks: the project's settings, plus the bench app
(its no-op task type) and a URLconf with the bare-insert baseline endpoint.
Nothing here is part of the product.

BENCH_STOCK_BROKER=1 gives django-q2's own broker back (the project replaces
its ORM broker): what the raw django-q2 baseline runs on.
"""

import os

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS, Q_CLUSTER

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
ROOT_URLCONF = "bench.urls"
if os.environ.get("BENCH_STOCK_BROKER"):
    Q_CLUSTER = {key: value for key, value in Q_CLUSTER.items() if key != "broker_class"}
