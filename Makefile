# The two commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# One stamp per requirements file: `make run` installs what serving needs
# (requirements.txt); test, lint and bench tools (requirements-dev.txt) come
# with the targets that use them. A stamp is redone when its file changes.
STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test test-fast test-pg lint format migrate env install install-dev serve worker clean

$(STAMP): requirements.txt client/pyproject.toml
	@test -x $(PY) || { echo "==> Creating the virtualenv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> Installing the service's packages (requirements.txt) into $(VENV)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	@echo "==> Installing the test, lint and bench tools (requirements-dev.txt) into $(VENV)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(DEV_STAMP)

install: $(STAMP)
# The tools for make test / lint / format and the benchmarks (bench/README.md).
install-dev: $(DEV_STAMP)

# Write .env from .env.example once, with a freshly generated SECRET_KEY.
.env: | $(STAMP)
	@$(PY) -c "import secrets,pathlib; t=pathlib.Path('.env.example').read_text(); \
	pathlib.Path('.env').write_text(t.replace('SECRET_KEY=change-me', 'SECRET_KEY=' + secrets.token_urlsafe(50), 1))"
	@echo "==> Wrote .env from .env.example with a new SECRET_KEY (edit it to change the admin password, port, database...)"

env: .env

migrate: $(STAMP) .env
	@echo "==> Bringing the database up to date (manage.py migrate)"
	@$(PY) manage.py migrate --no-input
	@$(PY) manage.py bootstrap_admin

# Web server on PORT (default 8081) and the workers, in the foreground; Ctrl-C stops both.
# honcho reads no env file (its .env would override the shell's variables;
# each process reads .env itself, the environment winning), and gets the port
# explicitly, because it sets PORT for every process it starts. `exec`: make
# passes a SIGTERM on to its child, which is then honcho, not a shell.
run: migrate
	@echo "==> Starting the web server and the workers (Ctrl-C stops both)"
	PATH="$(abspath $(BIN)):$$PATH" exec $(BIN)/honcho start -f Procfile --env /dev/null \
		--port "$$($(PY) -c 'import environ, os; environ.Env.read_env(".env"); print(os.environ.get("PORT", "8081"))')"

# Production web tier: gunicorn (WEB_WORKERS uvicorn workers, or gthread) on
# PORT, all read from the environment or .env by config/gunicorn.conf.py. Run
# `make worker` beside it or on other hosts (docs/scaling.md).
serve: migrate
	$(BIN)/gunicorn -c config/gunicorn.conf.py

# A cluster that stops cleanly whoever signals it, running tasks given
# WORKER_GRACE seconds to finish (docs/scaling.md).
WORKER_GRACE ?= 60
worker: migrate
	$(PY) manage.py runworkers --grace $(WORKER_GRACE)

test: $(DEV_STAMP)
	$(BIN)/pytest --durations=15

# The in-process suite only (no end-to-end processes, no benchmarks): the
# edit loop. CI runs everything (make test).
test-fast: $(DEV_STAMP)
	$(BIN)/pytest --durations=10 -m "not e2e" --ignore=tests/e2e

# The whole suite again on PostgreSQL, with a Redis cache (pytest-django creates
# test_<name>; the end-to-end stacks get a fresh database each). Skips with the
# reason when either is unreachable; fails instead under CI=true.
TEST_PG_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_CACHE_URL ?= redis://127.0.0.1:6379/4
test-pg: $(DEV_STAMP)
	DATABASE_URL=$(TEST_PG_DATABASE_URL) CACHE_URL=$(TEST_CACHE_URL) $(BIN)/pytest --durations=15

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
