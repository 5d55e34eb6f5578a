# The two commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: run test test-pg lint format migrate env install serve worker clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Write .env from .env.example once, with a freshly generated SECRET_KEY.
.env: | $(STAMP)
	$(PY) -c "import secrets,pathlib; t=pathlib.Path('.env.example').read_text(); \
	pathlib.Path('.env').write_text(t.replace('SECRET_KEY=change-me', 'SECRET_KEY=' + secrets.token_urlsafe(50), 1))"
	@echo "Wrote .env (edit it to change the admin password, port, database...)."

env: .env

migrate: $(STAMP) .env
	$(PY) manage.py migrate --no-input
	$(PY) manage.py bootstrap_admin

# Web server on PORT (default 8081) and the workers, in the foreground; Ctrl-C stops both.
# honcho reads no env file (its .env would override the shell's variables;
# each process reads .env itself, the environment winning), and gets the port
# explicitly, because it sets PORT for every process it starts. `exec`: make
# passes a SIGTERM on to its child, which is then honcho, not a shell.
run: migrate
	PATH="$(abspath $(BIN)):$$PATH" exec $(BIN)/honcho start -f Procfile --env /dev/null \
		--port "$$($(PY) -c 'import environ, os; environ.Env.read_env(".env"); print(os.environ.get("PORT", "8081"))')"

# Production web tier: gunicorn (gthread, WEB_WORKERS x WEB_THREADS) on PORT,
# all read from the environment or .env by config/gunicorn.conf.py. Run
# `manage.py qcluster` beside it or on other hosts (docs/scaling.md).
serve: migrate
	$(BIN)/gunicorn -c config/gunicorn.conf.py

worker: migrate
	$(PY) manage.py qcluster

test: $(STAMP)
	$(BIN)/pytest

# The whole suite again on PostgreSQL, with a Redis cache (pytest-django creates
# test_<name>; the end-to-end stacks get a fresh database each). Skips with the
# reason when either is unreachable; fails instead under CI=true.
TEST_PG_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_CACHE_URL ?= redis://127.0.0.1:6379/4
test-pg: $(STAMP)
	DATABASE_URL=$(TEST_PG_DATABASE_URL) CACHE_URL=$(TEST_CACHE_URL) $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
