# One command runs the dashboard (make run), one tests it (make test).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv

# A local .env (never committed) may set any variable from .env.example.
ifneq (,$(wildcard .env))
include .env
export
endif
PY := $(VENV)/bin/python

.PHONY: run password test lint format clean-var

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## run: install, migrate, create a login if none, start web + worker + beat (+ simulator in demo mode)
##      make run PORT=8080 SIMULATOR_PORT=8766 picks the ports (default 8000 and 8765)
run: $(VENV)/.runtime
	$(PY) -m demo.run $(if $(PORT),--port $(PORT)) $(if $(SIMULATOR_PORT),--simulator-port $(SIMULATOR_PORT))

## password: set and show a new password for the login `make run` shows (admin on a fresh dashboard)
password: $(VENV)/.runtime
	$(PY) -m demo.login --reset

## test: install the test tools and run the whole suite
test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
