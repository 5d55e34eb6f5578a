"""Settings for Task Runner.

Every value that depends on the environment is read here, once, with its type
and default. Process environment variables win over the project's `.env`.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

EXAMPLE_SECRET_KEY = "change-me"

env = environ.Env()
# read_env never overrides a variable already set in the process environment.
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY or SECRET_KEY == EXAMPLE_SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is missing or still the example value: set SECRET_KEY in the "
            "environment or .env to a long random string (`make run` writes one)."
        )
    SECRET_KEY = "insecure-development-key-only-for-debug"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PORT = env.int("PORT", default=8081)
# gunicorn under `make serve` (config/gunicorn.conf.py): processes x threads.
WEB_WORKERS = env.int("WEB_WORKERS", default=4)
WEB_THREADS = env.int("WEB_THREADS", default=4)

# --- HTTPS (production) -------------------------------------------------------
# Off by default so `make run` works over plain http on localhost; the README's
# production settings turn them on (and `manage.py check --deploy` is clean).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a TLS-terminating proxy: "HTTP_X_FORWARDED_PROTO,https". Only set it
# when the proxy always sets (and overwrites) that header.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be a header and a value, e.g. "
        "SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https (or empty)."
    )
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "accounts",
    "tasks",
    # Apps that bring their own task types (their jobs.py is discovered).
    *env.list("EXTRA_APPS", default=[]),
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body: DRF reads the raw stream, so Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE alone would not cap a JSON body.
    "config.middleware.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
# Paths work with and without a trailing slash through the URL patterns
# themselves; a redirect would turn a POST into a GET and lose the task.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and every worker write to one file. WAL lets readers run
    # beside the writer, IMMEDIATE takes the write lock when a transaction
    # starts (so it waits on the busy timeout instead of failing half-way with
    # "database is locked"), and NORMAL sync is safe under WAL.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=30),
        # `timeout` above is the busy timeout; a PRAGMA here would override it.
        "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Throttle counters live here. The default (memory) is per process: with
# several web processes or hosts, point CACHE_URL at Redis so they share counts.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve static files straight from the apps, so the admin and the API docs
# look right under `make run` without a collectstatic step.
WHITENOISE_USE_FINDERS = True

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Views pick their throttles (accounts/throttles.py); these are the rates.
    "DEFAULT_THROTTLE_RATES": {
        "login_ip": env.str("THROTTLE_LOGIN_IP", default="30/min"),
        "login_username": env.str("THROTTLE_LOGIN_USERNAME", default="10/min"),
        "task_create": env.str("THROTTLE_TASK_CREATE", default="120/min"),
    },
    # How many proxies in front of the server append to X-Forwarded-For; the
    # per-IP login throttle trusts that many entries (0: REMOTE_ADDR only).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_SECONDS", default=900)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_REFRESH_SECONDS", default=86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "ALGORITHM": "HS256",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Task Runner API",
    "DESCRIPTION": "Start background tasks, follow their progress and fetch their output.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.finish_schema",
    ],
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "tasks.models.Status",
        "UnfinishedStatusEnum": [("queued", "Queued"), ("in_progress", "In progress")],
        "UnsuccessfulStatusEnum": [("failed", "Failed"), ("cancelled", "Cancelled")],
    },
}

# --- Tasks ----------------------------------------------------------------
TASKS = {
    # How long the seed's demo task runs (what an empty `POST /tasks` starts).
    "DEFAULT_SECONDS": env.float("TASK_DEFAULT_SECONDS", default=60.0),
    # Timeout for a type that sets none, and the most a request may ask for.
    "DEFAULT_TIMEOUT": env.int("TASK_DEFAULT_TIMEOUT", default=300),
    "MAX_TIMEOUT": env.int("TASK_MAX_TIMEOUT", default=3600),
    "MAX_RETRIES": env.int("TASK_MAX_RETRIES", default=10),
    # Backoff before automatic retry n: min(BASE * 2**(n-1), MAX) plus jitter.
    "RETRY_BACKOFF_BASE": env.float("TASK_RETRY_BACKOFF_BASE", default=2.0),
    "RETRY_BACKOFF_MAX": env.float("TASK_RETRY_BACKOFF_MAX", default=300.0),
    # A running task's worker renews its lease every HEARTBEAT seconds; a lease
    # not renewed for LEASE seconds means the worker is gone.
    "HEARTBEAT_SECONDS": env.float("TASK_HEARTBEAT_SECONDS", default=1.0),
    "LEASE_SECONDS": env.float("TASK_LEASE_SECONDS", default=10.0),
    # How often each cluster's housekeeping (expired leases, dead workers) runs.
    "MAINTENANCE_SECONDS": env.float("TASK_MAINTENANCE_SECONDS", default=1.0),
    # How far ahead `run_at` / `delay` may put a task.
    "MAX_DELAY_SECONDS": env.int("TASK_MAX_DELAY", default=30 * 86400),
    # Tasks one user may have running at once across every cluster (0: no limit).
    "MAX_RUNNING_PER_USER": env.int("TASK_MAX_RUNNING_PER_USER", default=0),
    # Progress and cancellation are written/read at most this often.
    "PROGRESS_INTERVAL": env.float("TASK_PROGRESS_INTERVAL", default=0.5),
    "IDEMPOTENCY_HOURS": env.int("TASK_IDEMPOTENCY_HOURS", default=24),
    "MAX_ARGS_BYTES": env.int("TASK_MAX_ARGS_BYTES", default=64 * 1024),
    "MAX_OUTPUT_BYTES": env.int("TASK_MAX_OUTPUT_BYTES", default=1024 * 1024),
    "MAX_UNFINISHED_PER_USER": env.int("TASK_MAX_UNFINISHED_PER_USER", default=1000),
    # How many times a task whose worker vanished goes back to the queue
    # (on top of its own retries) before it fails with "worker lost".
    "MAX_LOST_REQUEUES": env.int("TASK_MAX_LOST_REQUEUES", default=3),
    # A worker whose heartbeat is older than this is not counted as alive.
    "WORKER_STALE_SECONDS": env.float("TASK_WORKER_STALE_SECONDS", default=30.0),
    # /metrics reports durations and finished counts over this sliding window.
    "METRICS_WINDOW_SECONDS": env.float("TASK_METRICS_WINDOW_SECONDS", default=300.0),
}
# A Prometheus scraper sends `Authorization: Bearer <METRICS_TOKEN>`; empty
# means only staff users' access tokens may read /metrics.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Largest request body (bytes); bigger ones get a 413 JSON error.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BYTES", default=1024 * 1024)
# Deepest nesting of arrays/objects a JSON body may have.
MAX_JSON_DEPTH = env.int("MAX_JSON_DEPTH", default=32)

# --- django-q2: the process pool --------------------------------------------
# The task table is the queue: each cluster's broker (tasks.cluster.TaskBroker)
# claims runnable rows and django-q2's workers run them. Its timeout is a
# backstop above the longest task a request may ask for, and `retry` must stay
# above it; crash recovery rests on our own lease, not on django-q2.
# The queues this host's clusters serve (comma-separated; empty: all).
Q_QUEUES = env.list("Q_QUEUES", default=[])
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="task-runner"),
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": TASKS["MAX_TIMEOUT"] + 30,
    "retry": TASKS["MAX_TIMEOUT"] + 120,
    "max_attempts": 1,
    # A worker process is replaced after this many tasks, or once it has
    # grown past Q_MAX_RSS_MB (guards against leaks in task code). Each
    # replacement leaves its slot idle for up to half a second, so counting
    # is kept rare and memory is the guard that acts.
    "recycle": env.int("Q_RECYCLE", default=10_000),
    "max_rss": env.int("Q_MAX_RSS_MB", default=512) * 1024 or None,
    "ack_failures": True,
    "save_limit": env.int("Q_SAVE_LIMIT", default=250),
    # How long an idle cluster waits before looking at the table again (on
    # PostgreSQL, new work also wakes it at once through LISTEN/NOTIFY).
    "poll": env.float("Q_POLL", default=0.05),
    "catch_up": False,
    # django-q2's own scheduler runs import paths from its Schedule table;
    # nothing of the project uses it.
    "scheduler": False,
    "sync": env.bool("Q_SYNC", default=False),
    "label": "Workers (django-q2)",
    "broker_class": "tasks.cluster.TaskBroker",
    # django-q2 keeps its own (unused) result rows and statistics here.
    "orm": "default",
}

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django_q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}

# --- First admin (read by `createsuperuser --noinput` and `make run`) ------
DJANGO_SUPERUSER_USERNAME = env.str("DJANGO_SUPERUSER_USERNAME", default="")
DJANGO_SUPERUSER_PASSWORD = env.str("DJANGO_SUPERUSER_PASSWORD", default="")
DJANGO_SUPERUSER_EMAIL = env.str("DJANGO_SUPERUSER_EMAIL", default="")
