"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): check what can be checked."""

import importlib
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
REQUIREMENTS = (ROOT / "requirements.txt").read_text().lower()


def test_compose_has_the_deployment_services_with_health_checks():
    services = COMPOSE["services"]

    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    for name in ("postgres", "redis", "web", "worker"):
        assert "healthcheck" in services[name], name
    for name in ("web", "worker", "beat", "migrate"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")


@pytest.mark.parametrize("service", ["web", "worker", "beat", "migrate"])
def test_compose_commands_exist(service):
    command = COMPOSE["services"][service]["command"]
    program = command[0]

    if program == "python":
        assert command[1] == "manage.py" and command[2] in get_commands()
    elif program == "gunicorn":
        assert "gunicorn==" in REQUIREMENTS
        module, _, attribute = command[1].partition(":")
        assert hasattr(importlib.import_module(module), attribute or "application")
    elif program == "celery":
        assert "celery[redis]==" in REQUIREMENTS
        assert command[1:3] == ["-A", "dashboard"] and command[3] in {"worker", "beat"}
        assert importlib.import_module("dashboard").celery_app.main == "dashboard"
    else:
        pytest.fail(f"unexpected program {program!r}")


def test_the_web_health_check_url_exists(client, db):
    check = " ".join(COMPOSE["services"]["web"]["healthcheck"]["test"])
    assert "/healthz" in check

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_the_dockerfile_default_command_is_the_web_server():
    text = (ROOT / "Dockerfile").read_text()
    cmd_line = next(line for line in text.splitlines() if line.startswith("CMD"))

    assert "gunicorn" in cmd_line and "dashboard.wsgi" in cmd_line
    assert "FROM python:3.11" in text
