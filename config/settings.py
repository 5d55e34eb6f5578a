"""Settings for Task Runner.

Every value that depends on the environment is read here, once, with its type
and default. Process environment variables win over the project's `.env`.
"""

from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers as default_cors_headers
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
# gunicorn under `make serve` (config/gunicorn.conf.py). WEB_SERVER "asgi"
# (default): WEB_WORKERS uvicorn event-loop processes over config/asgi.py, so
# idle connections, slow uploads, long-polls and event streams wait on the
# loop instead of holding a thread (docs/scaling.md). "gthread": the former
# WSGI tier, WEB_WORKERS processes x WEB_THREADS threads.
WEB_SERVER = env.str("WEB_SERVER", default="asgi")
if WEB_SERVER not in ("asgi", "gthread"):
    raise ImproperlyConfigured(f"WEB_SERVER must be asgi or gthread, not {WEB_SERVER!r}.")
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
    # django.contrib.admin, with the dashboard's pages (tasks/admin_site.py).
    "tasks.admin_site.TaskRunnerAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    # Key generation and hashing; our key model (accounts.APIKey) adds the owner.
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_tasks",
    "corsheaders",
    "accounts",
    "tasks",
    "webhooks",
    "web",
    # Apps that bring their own task types (their jobs.py is discovered).
    *env.list("EXTRA_APPS", default=[]),
]

MIDDLEWARE = [
    # Before all: every line a request logs names it (config/logs.py).
    "config.logs.RequestIdMiddleware",
    # Outside the rest, so it times and counts every answer, refusals included.
    "config.http_metrics.HttpMetricsMiddleware",
    # First: a preflight is answered here, before authentication, and every
    # answer (errors included) carries the CORS headers a browser needs to read it.
    "corsheaders.middleware.CorsMiddleware",
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

# --- CORS: browser apps on other origins ----------------------------------
# Origins (scheme://host[:port]) whose pages may call the API; none by default.
# No cookies cross origins: such apps send `Authorization` (a token or API key).
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_ALLOW_HEADERS = [*default_cors_headers, "idempotency-key"]
CORS_EXPOSE_HEADERS = ["Location", "Retry-After", "X-Request-ID"]

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

# Throttle counters live here, and must be shared by every web process. Unset,
# they are kept in the database, which every process and host already shares
# (accounts/counters.py says why not Django's database cache); CACHE_URL may
# point at Redis instead. locmemcache:// counts per process: one process only.
_cache_url = env.str("CACHE_URL", default="")
CACHES = {
    "default": env.cache_url_config(_cache_url)
    if _cache_url
    else {"BACKEND": "accounts.counters.DatabaseCounterCache"}
}

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
        "accounts.authentication.BearerAuthentication",
        "accounts.authentication.APIKeyAuthentication",
        # The page at / (web/) and the admin's login: a session cookie, with
        # CSRF enforced on unsafe methods. Last, so a request without
        # credentials is told to send a Bearer token (WWW-Authenticate).
        "rest_framework.authentication.SessionAuthentication",
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
# A login session (a chain of rotated refresh tokens) ends this long after the
# login, however often it is refreshed (accounts/tokens.py).
JWT_SESSION_MAX_SECONDS = env.int("JWT_SESSION_MAX_SECONDS", default=7 * 86400)

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
        "tasks.api.schema.typed_task_bodies",
    ],
    # Tasks first: what most readers come for.
    "TAGS": [
        {"name": "tasks", "description": "Start tasks, follow them, fetch their output."},
        {"name": "original", "description": "The first routes, kept as they were."},
        {"name": "api keys", "description": "Keys for programs: `Authorization: Api-Key`."},
        {"name": "accounts", "description": "Log in, refresh and revoke tokens."},
        {"name": "operations", "description": "Health and metrics."},
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
    # How long the demo task runs (what an empty `POST /tasks` starts).
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
    # Heartbeats silent for this long are deleted (until then they show as dead).
    "WORKER_PRUNE_SECONDS": env.int("TASK_WORKER_PRUNE_SECONDS", default=86400),
    # /metrics reports durations and finished counts over this sliding window.
    "METRICS_WINDOW_SECONDS": env.float("TASK_METRICS_WINDOW_SECONDS", default=300.0),
    # Schedules: how often each cluster looks for due ones (a fire starts
    # within about this long of its time), and the most missed times one
    # schedule with catch_up "all" fires after downtime.
    "SCHEDULE_POLL_SECONDS": env.float("TASK_SCHEDULE_POLL_SECONDS", default=0.25),
    "SCHEDULE_MAX_CATCH_UP": env.int("TASK_SCHEDULE_MAX_CATCH_UP", default=100),
    # Most tasks one `POST /tasks/batch` may create.
    "MAX_BATCH": env.int("TASK_MAX_BATCH", default=1000),
    # How long finished tasks are kept for types that set no `retention`
    # (e.g. "30d", "12h"; empty: forever). Housekeeping purges the rest.
    "RETENTION": env.str("TASK_RETENTION", default=""),
    # Log lines (ctx.log) kept per task: at most this many lines and bytes;
    # the oldest are dropped first, leaving a marker line.
    "MAX_LOG_LINES": env.int("TASK_MAX_LOG_LINES", default=1000),
    "MAX_LOG_BYTES": env.int("TASK_MAX_LOG_BYTES", default=256 * 1024),
    # Event streams (/events, /tasks/{id}/events): how often one looks for
    # changes, the keep-alive comment after this long without events, and
    # the longest a stream stays open (the client reconnects with Last-Event-ID).
    "EVENTS_POLL_SECONDS": env.float("TASK_EVENTS_POLL_SECONDS", default=1.0),
    "EVENTS_KEEPALIVE_SECONDS": env.float("TASK_EVENTS_KEEPALIVE_SECONDS", default=15.0),
    "EVENTS_MAX_SECONDS": env.float("TASK_EVENTS_MAX_SECONDS", default=300.0),
}
# django.tasks (the django-tasks package): Django code's `@task` functions run
# on this service's workers (tasks/django_tasks.py). django-tasks' own setting
# name, TASKS, is the one above, so it reads this one instead (tasks/apps.py).
TASK_BACKENDS = {"default": {"BACKEND": "tasks.django_tasks.TaskRunnerBackend"}}
# A Prometheus scraper sends `Authorization: Bearer <METRICS_TOKEN>`; empty
# means only staff users' access tokens may read /metrics.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A directory (empty at start) where each web process writes its HTTP request
# metrics, so /metrics adds up every process (config/http_metrics.py). Empty:
# kept in memory, right for one process; `make serve` (gunicorn, WEB_WORKERS
# processes) makes one itself. prometheus_client reads the same variable.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a directory: create it "
        "(empty) or leave the variable unset."
    )
# Unrevoked API keys one user may hold at once (0: no limit).
API_KEYS_MAX_PER_USER = env.int("API_KEYS_MAX_PER_USER", default=100)
# Largest request body (bytes); bigger ones get a 413 JSON error.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BYTES", default=1024 * 1024)
# Deepest nesting of arrays/objects a JSON body may have.
MAX_JSON_DEPTH = env.int("MAX_JSON_DEPTH", default=32)

# Webhooks (docs/webhooks.md). Targets that resolve to loopback, private or
# link-local addresses are refused unless WEBHOOK_ALLOW_PRIVATE (local
# receivers, tests). A delivery is retried with exponential backoff from
# WEBHOOK_RETRY_BASE_SECONDS up to WEBHOOK_RETRY_MAX_SECONDS between tries,
# until WEBHOOK_MAX_AGE_HOURS after its event; the sender in each cluster
# looks for due deliveries every WEBHOOK_POLL_SECONDS; WEBHOOK_MAX_PER_USER
# caps one user's webhooks (0: no cap).
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_AGE_HOURS = env.float("WEBHOOK_MAX_AGE_HOURS", default=24.0)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=5.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
WEBHOOK_POLL_SECONDS = env.float("WEBHOOK_POLL_SECONDS", default=1.0)
WEBHOOK_MAX_PER_USER = env.int("WEBHOOK_MAX_PER_USER", default=20)
# Delivered and failed deliveries (with their attempts) are kept this long (0: forever).
WEBHOOK_KEEP_DAYS = env.int("WEBHOOK_KEEP_DAYS", default=7)
# False: this host's clusters send no webhooks (those of another host do).
WEBHOOK_SEND = env.bool("WEBHOOK_SEND", default=True)

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
    # ... and its cluster statistics (qinfo, qmonitor) in a cache. The
    # database's throttle counters hold integers only: without CACHE_URL,
    # no cache (an alias that does not exist turns them off).
    "cache": "default" if _cache_url else "",
}

# --- Logging ----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# "plain" text lines, or "json": one JSON object per line, with the request id
# on a request's lines and the task id and attempt on a worker's.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "filters": {"context": {"()": "config.logs.ContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django_q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # runserver's line per request, in the same format as the rest.
        "django.server": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}

# --- First admin (read by `createsuperuser --noinput` and `make run`) ------
DJANGO_SUPERUSER_USERNAME = env.str("DJANGO_SUPERUSER_USERNAME", default="")
DJANGO_SUPERUSER_PASSWORD = env.str("DJANGO_SUPERUSER_PASSWORD", default="")
DJANGO_SUPERUSER_EMAIL = env.str("DJANGO_SUPERUSER_EMAIL", default="")
