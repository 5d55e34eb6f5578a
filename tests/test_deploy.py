"""Deploy mode: DEBUG=False refuses a missing or example SECRET_KEY, and the
README's production settings pass `manage.py check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The production environment the README documents (keep the two in step).
PRODUCTION_ENV = {
    "DEBUG": "False",
    "SECRET_KEY": "k3Jx9-pQ2vLr8sT1uW4yZ7aB0cD5eF6gH8iJ2kL3mN4oP5qR6sT7uV8wX9yZ0aB1cD",
    "JWT_SIGNING_KEY": "Zq8Wm2Xn5Rt7Yp1Lk4Jh6Gf9Ds3Ac0Vb2Nm5Qw8Er1Ty4Ui7Op0As3Df6Gh9Jk2L",
    "ALLOWED_HOSTS": "tasks.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://tasks.example.com",
    "SECURE_SSL_REDIRECT": "True",
    "SESSION_COOKIE_SECURE": "True",
    "CSRF_COOKIE_SECURE": "True",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "True",
    "SECURE_HSTS_PRELOAD": "True",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "DJANGO_SUPERUSER_PASSWORD": "Vt5-first-admin-password-Qm8",
}


def manage(*args, env):
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_production_settings_pass_check_deploy(tmp_path):
    env = {**PRODUCTION_ENV, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_readme_lists_every_production_setting():
    readme = (ROOT / "README.md").read_text()
    for name in PRODUCTION_ENV:
        assert f"{name}=" in readme, name


def test_the_default_settings_are_not_deploy_ready_but_work_over_http(tmp_path):
    env = {
        "DEBUG": "False",
        "SECRET_KEY": PRODUCTION_ENV["SECRET_KEY"],
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    # `make run` serves plain http on localhost: no redirect, no secure-only cookies.
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout  # SECURE_SSL_REDIRECT off


@pytest.mark.parametrize("secret_key", ["", "change-me"])
def test_debug_false_refuses_a_missing_or_example_secret_key(tmp_path, secret_key):
    env = {"DEBUG": "False", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    # Unset, SECRET_KEY could still come from a developer's .env (the process
    # environment only wins when set), so "missing" is run as an empty value.
    env["SECRET_KEY"] = secret_key or ""
    result = manage("check", env=env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is missing or still the example value" in result.stderr


def test_debug_true_runs_without_a_secret_key(tmp_path):
    env = {"DEBUG": "True", "SECRET_KEY": "", "DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr


def test_a_malformed_proxy_ssl_header_is_refused(tmp_path):
    env = {
        **PRODUCTION_ENV,
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a header and a value" in result.stderr
