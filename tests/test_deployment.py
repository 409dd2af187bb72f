"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine): check what can be checked."""

import ast
import fnmatch
import importlib
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.utils import timezone

from tests.factories import make_scan

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
REQUIREMENTS = (ROOT / "requirements.txt").read_text().lower()
PRODUCT_PACKAGES = ("scans", "dashboard", "protecto")


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


def test_the_web_health_check_asks_livez_which_answers_even_while_the_system_is_unhealthy(client, db):
    check = " ".join(COMPOSE["services"]["web"]["healthcheck"]["test"])
    assert "/livez" in check
    # A stale poller makes /healthz 503; the web container must stay in service to show it.
    make_scan(status="PENDING", created_at=timezone.now() - timedelta(hours=1))
    assert client.get("/healthz").status_code == 503

    response = client.get("/livez")

    assert (response.status_code, response.content) == (200, b"ok")


def test_the_dockerfile_default_command_starts_the_wsgi_application():
    cmd_line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD"))
    command = yaml.safe_load(cmd_line.removeprefix("CMD"))  # the exec form is a JSON array, which YAML reads too

    assert command[0] == "gunicorn" and "gunicorn==" in REQUIREMENTS
    module, _, attribute = command[1].partition(":")
    assert callable(getattr(importlib.import_module(module), attribute or "application"))


def _docker_ignores(path: str, patterns: list[str]) -> bool:
    """Whether `docker build` leaves `path` out: a pattern matching it or a parent folder; the last match wins."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_the_image_leaves_out_development_tools_local_state_and_secrets():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    for path in (
        "demo",
        "demo/simulator/server.py",
        "tests",
        "bench",
        "var",
        "var/secret-key",
        ".env",
        ".venv",
        ".git",
    ):
        assert _docker_ignores(path, patterns), path
    for path in (
        "manage.py",
        "requirements.txt",
        "dashboard/settings.py",
        "scans/models.py",
        "protecto/client.py",
    ):
        assert not _docker_ignores(path, patterns), path
    for folder in ("templates", "static", "scans/migrations"):
        assert not _docker_ignores(folder, patterns), folder


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_the_product_never_imports_the_demo_package():
    files = [
        ROOT / "manage.py",
        *(path for package in PRODUCT_PACKAGES for path in (ROOT / package).rglob("*.py")),
    ]
    assert len(files) > 20  # the walk found the product

    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in _imported_modules(ast.parse(path.read_text(), filename=str(path)))
        if name == "demo" or name.startswith("demo.")
    ]

    assert offenders == []
