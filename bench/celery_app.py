"""The Celery baseline of `bench.celery_drain`: a plain Celery app on Redis,
as broker and as result backend, with one no-op task. Nothing here is part
of the product.

The producer (the benchmark) and the worker (`celery -A bench.celery_app
worker`) read the same two variables, set by the benchmark for each run.
"""

import os

from celery import Celery

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS_URL", "redis://127.0.0.1:6379/5")
# Every key and channel this app touches (queue, bindings, unacked messages,
# results) starts with it, so a run can delete exactly its own keys.
KEY_PREFIX = os.environ.get("BENCH_CELERY_KEY_PREFIX", "bench-celery:")
QUEUE = "bench-celery"

# No fix-ups: with DJANGO_SETTINGS_MODULE in the environment Celery would add
# its Django one (per-task connection and cache housekeeping); the baseline
# is plain Celery, the hardest one to beat.
app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL, fixups=[])
app.conf.update(
    task_default_queue=QUEUE,
    broker_transport_options={"global_keyprefix": KEY_PREFIX},
    result_backend_transport_options={"global_keyprefix": KEY_PREFIX},
    # Celery 5 warns at start-up unless this is said explicitly.
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.celery_noop")
def noop():
    return None
