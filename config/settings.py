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
        "init_command": (
            "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=30000;"
        ),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
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
    # How often the maintenance loop (due tasks, expired leases, lost
    # messages) runs inside the workers.
    "MAINTENANCE_SECONDS": env.float("TASK_MAINTENANCE_SECONDS", default=1.0),
    # A queued task whose message has been in the transport this long while
    # the broker reports an empty queue is taken as lost and sent again.
    "REQUEUE_AFTER_SECONDS": env.float("TASK_REQUEUE_AFTER_SECONDS", default=30.0),
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
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BYTES", default=1024 * 1024)

# --- django-q2: the transport ---------------------------------------------
# Our Task row is the record; django-q2 only carries task ids to workers.
# Its timeout is a backstop above the longest task a request may ask for,
# and `retry` must stay above it (django-q2 re-delivers after `retry`).
# Crash recovery does not wait for `retry`: it rests on our own lease.
Q_REDIS_URL = env.str("Q_REDIS_URL", default="")
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="task-runner"),
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": TASKS["MAX_TIMEOUT"] + 30,
    "retry": TASKS["MAX_TIMEOUT"] + 120,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": env.int("Q_SAVE_LIMIT", default=250),
    "poll": env.float("Q_POLL", default=0.05),
    "catch_up": False,
    "sync": env.bool("Q_SYNC", default=False),
    "label": "Transport (django-q2)",
}
if Q_REDIS_URL:
    Q_CLUSTER["redis"] = Q_REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

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
