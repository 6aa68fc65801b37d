# Lanes. `make run` starts everything on this machine; `make test` runs the whole suite.
# Needs GNU make and Python 3.11 or newer; everything else goes into $(VENV).

PYTHON3 ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
# Tests talk to this Redis unless TEST_REDIS_URL says otherwise (tests/conftest.py's default).
LOCAL_TEST_REDIS := redis://127.0.0.1:6379/13
PYTEST_ARGS ?= -n 3

.PHONY: run test lint bench soak clean

run: $(INSTALLED)
	$(PYTHON) -m webapp.launcher

# Tests use PostgreSQL when TEST_DATABASE_URL is set, and a real Redis: TEST_REDIS_URL, else
# a local server on 6379, else an embedded redis-server started for the run.
test: $(INSTALLED_DEV)
	$(VENV)/bin/ruff check .
	@if [ -n "$${TEST_REDIS_URL:-}" ] || $(PYTHON) -m webapp.embedded_redis ping $(LOCAL_TEST_REDIS); then \
		echo "$(PYTHON) -m pytest $(PYTEST_ARGS)"; \
		$(PYTHON) -m pytest $(PYTEST_ARGS); \
	else \
		echo "No Redis answers at $(LOCAL_TEST_REDIS): the tests get an embedded redis-server."; \
		$(PYTHON) -m webapp.embedded_redis run -- $(PYTHON) -m pytest $(PYTEST_ARGS); \
	fi

lint: $(INSTALLED_DEV)
	$(VENV)/bin/ruff check .

# The benchmark beside Celery and RQ, then one user's attack on another (issue 8's availability target).
bench: $(INSTALLED_DEV)
	$(PYTHON) -m bench
	$(PYTHON) -m bench.hostile

# The fault soak: its own PostgreSQL and redis-server, gunicorn and two supervisors, random faults;
# exits non-zero on any violation. SOAK_SECONDS (default 120) and SOAK_SEED choose the run;
# SOAK_SENTINEL=1 runs Redis as a Sentinel deployment and fails its primary over.
soak: $(INSTALLED_DEV)
	$(PYTHON) -m bench.soak

# Removes the virtualenv and caches only: instance/ holds the database, keys and Redis data.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

$(VENV)/bin/python:
	@$(PYTHON3) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Lanes needs Python 3.11 or newer, and $(PYTHON3) is " + sys.version.split()[0] + ": set PYTHON3=/path/to/python3.11")'
	$(PYTHON3) -m venv $(VENV)

$(INSTALLED): requirements.txt | $(VENV)/bin/python
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "$(VENV) has Python " + sys.version.split()[0] + "; Lanes needs 3.11 or newer: make clean, then set PYTHON3")'
	@echo "Installing requirements.txt into $(VENV)..."
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(INSTALLED_DEV): requirements-dev.txt $(INSTALLED)
	@echo "Installing requirements-dev.txt into $(VENV)..."
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@
