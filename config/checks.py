"""System checks for what the README requires in production.

`manage.py check --deploy` runs the ones marked deploy=True beside Django's
own: a weak token signing key is an error (anyone who guesses it mints
tokens for any user), the other gaps are warnings, which the README's
`--fail-level WARNING` turns into failures too.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

# Django's own rule for SECRET_KEY (security.W009), applied to the JWT key:
# HS256 needs at least 32 random bytes; 50 characters of a random string
# (`secrets.token_urlsafe(50)` gives 67) is the README's advice.
MIN_KEY_LENGTH = 50
MIN_KEY_UNIQUE_CHARACTERS = 5
EXAMPLE_ADMIN_PASSWORD = "admin-change-me"  # .env.example's
MIN_METRICS_TOKEN_LENGTH = 32


def weak_key(key: str) -> bool:
    return (
        len(key) < MIN_KEY_LENGTH
        or len(set(key)) < MIN_KEY_UNIQUE_CHARACTERS
        or key.startswith("django-insecure")
        or key in {"change-me", "insecure-development-key-only-for-debug"}
    )


@register(Tags.security, deploy=True)
def check_jwt_signing_key(app_configs=None, **kwargs):
    key = str(settings.SIMPLE_JWT.get("SIGNING_KEY") or "")
    problems = []
    if weak_key(key):
        problems.append(
            Error(
                f"The JWT signing key is weak: it has {len(key)} characters "
                f"({len(set(key))} distinct). Anyone who guesses it can sign tokens for "
                "any user.",
                hint=f"Set JWT_SIGNING_KEY to at least {MIN_KEY_LENGTH} random characters, "
                'e.g. python3 -c "import secrets; print(secrets.token_urlsafe(50))".',
                id="config.E001",
            )
        )
    if key == settings.SECRET_KEY:
        problems.append(
            Warning(
                "JWT_SIGNING_KEY is not set, so tokens are signed with SECRET_KEY.",
                hint="Set JWT_SIGNING_KEY to a random value of its own (README: "
                "Production settings), so either key can be rotated alone.",
                id="config.W002",
            )
        )
    return problems


@register(Tags.security, deploy=True)
def check_bootstrap_admin_password(app_configs=None, **kwargs):
    if settings.DJANGO_SUPERUSER_PASSWORD == EXAMPLE_ADMIN_PASSWORD:
        return [
            Warning(
                "DJANGO_SUPERUSER_PASSWORD is still the example value: on an empty "
                "database the first admin is created with a password everyone knows.",
                hint="Change it, or remove it once the first admin exists.",
                id="config.W003",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_metrics_token(app_configs=None, **kwargs):
    token = settings.METRICS_TOKEN
    if token and len(token) < MIN_METRICS_TOKEN_LENGTH:
        return [
            Error(
                f"METRICS_TOKEN has {len(token)} characters: short enough to guess.",
                hint=f"Use at least {MIN_METRICS_TOKEN_LENGTH} random characters, or leave "
                "it empty (staff tokens only).",
                id="config.E004",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_shared_throttles(app_configs=None, **kwargs):
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.endswith((".LocMemCache", ".DummyCache")):
        return [
            Warning(
                "Throttle counters are kept in each process's memory (CACHE_URL="
                "locmemcache://), so every web process lets the full limit through.",
                hint="Leave CACHE_URL empty (counters in the database) or point it at Redis.",
                id="config.W005",
            )
        ]
    return []


@register(Tags.security)
def check_no_import_path_scheduler(app_configs=None, **kwargs):
    if settings.Q_CLUSTER.get("scheduler", True):
        return [
            Error(
                "django-q2's scheduler is on: it runs any import path stored in its "
                "Schedule table.",
                hint='Keep Q_CLUSTER["scheduler"] False; schedules are not a feature here.',
                id="config.E006",
            )
        ]
    return []
