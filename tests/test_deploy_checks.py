"""`manage.py check --deploy` refuses weak token keys and the gaps the README's
production settings close."""

import pytest
from django.core.checks import Error, Warning

from config import checks

from .test_deploy import PRODUCTION_ENV, manage


@pytest.mark.parametrize(
    "key",
    [
        "abc",
        "a" * 80,  # long, but four distinct characters at most
        "abcd" * 20,
        "short-but-random-Zq8Wm2Xn5Rt7Yp1Lk4",
    ],
)
def test_check_deploy_fails_on_a_weak_jwt_signing_key(tmp_path, key):
    env = {
        **PRODUCTION_ENV,
        "JWT_SIGNING_KEY": key,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = manage("check", "--deploy", env=env)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config.E001" in output
    assert "JWT signing key is weak" in output
    assert "JWT_SIGNING_KEY" in output


def test_a_weak_key_does_not_stop_development(tmp_path):
    env = {"DEBUG": "True", "JWT_SIGNING_KEY": "abc", "DATABASE_URL": f"sqlite:///{tmp_path / 'd'}"}
    assert manage("check", env=env).returncode == 0


def ids(found):
    return {message.id for message in found}


def test_a_strong_separate_key_passes(settings):
    settings.SECRET_KEY = PRODUCTION_ENV["SECRET_KEY"]
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": PRODUCTION_ENV["JWT_SIGNING_KEY"]}
    assert checks.check_jwt_signing_key() == []


def test_signing_tokens_with_the_secret_key_is_a_warning(settings):
    settings.SECRET_KEY = PRODUCTION_ENV["SECRET_KEY"]
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": settings.SECRET_KEY}

    found = checks.check_jwt_signing_key()

    assert ids(found) == {"config.W002"}
    assert isinstance(found[0], Warning)


def test_the_example_admin_password_is_flagged(settings):
    settings.DJANGO_SUPERUSER_PASSWORD = "admin-change-me"
    assert ids(checks.check_bootstrap_admin_password()) == {"config.W003"}
    settings.DJANGO_SUPERUSER_PASSWORD = ""
    assert checks.check_bootstrap_admin_password() == []


def test_a_short_metrics_token_is_an_error(settings):
    settings.METRICS_TOKEN = "secret"
    found = checks.check_metrics_token()
    assert ids(found) == {"config.E004"} and isinstance(found[0], Error)
    settings.METRICS_TOKEN = "k" * 8 + "Zq8Wm2Xn5Rt7Yp1Lk4Jh6Gf9Ds3Ac0Vb"
    assert checks.check_metrics_token() == []


def test_per_process_throttle_counters_are_flagged(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert ids(checks.check_shared_throttles()) == {"config.W005"}
    settings.CACHES = {"default": {"BACKEND": "accounts.counters.DatabaseCounterCache"}}
    assert checks.check_shared_throttles() == []


def test_django_q2_s_scheduler_must_stay_off(settings):
    assert checks.check_no_import_path_scheduler() == []
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "scheduler": True}
    assert ids(checks.check_no_import_path_scheduler()) == {"config.E006"}


def test_the_readme_production_settings_pass_even_with_the_example_env_file(tmp_path):
    # What `make run` wrote (.env.example's values) under the README's settings,
    # with the admin password changed as the check asks.
    env = {
        **PRODUCTION_ENV,
        "CACHE_URL": "",
        "DJANGO_SUPERUSER_PASSWORD": "Xq2-a-real-password-9Lk",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
