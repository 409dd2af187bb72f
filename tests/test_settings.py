"""Settings from the environment: a malformed value stops start-up with one line naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# A production start as the compose file makes it; each test changes or removes one of these.
VALID = {
    "PROTECTO_API_URL": "https://tenant.example.test/api/vault",
    "PROTECTO_AUTH_TOKEN": "a-token-for-settings-tests",
    "SECRET_KEY": "settings-test-key-0123456789-0123456789",
}
_OURS = ("PROTECTO_", "REFRESH_", "DATABASE_", "REDIS_", "SECRET_KEY", "DEMO_MODE", "DEBUG", "DJANGO_SETTINGS")


def manage_check(tmp_path: Path, **env: str | None) -> subprocess.CompletedProcess:
    """`manage.py check` with the product's settings, VALID changed by `env` (None removes a variable)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    chosen = {**VALID, **env}
    clean.update({k: v for k, v in chosen.items() if v is not None}, VAR_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("PROTECTO_BATCH_SIZE", "lots"),
        ("PROTECTO_BATCH_SIZE", "0"),
        ("PROTECTO_TIMEOUT_SECONDS", "soon"),
        ("REFRESH_INTERVAL_SECONDS", "-5"),
        ("PROTECTO_TIMEZONE", "Mars/Olympus"),
        ("PROTECTO_API_URL", "ftp://example.test"),
        ("PROTECTO_STATUS_PATH", "data-scan-status"),
        ("REDIS_URL", "localhost:6379"),
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("SECRET_KEY", "short"),
    ],
)
def test_a_malformed_setting_stops_start_up_with_one_line_naming_it(tmp_path, name, value):
    result = manage_check(tmp_path, **{name: value})

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["PROTECTO_API_URL", "PROTECTO_AUTH_TOKEN", "SECRET_KEY"])
def test_a_production_start_without_a_required_setting_stops_naming_it(tmp_path, name):
    result = manage_check(tmp_path, **{name: None})

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr


def test_demo_mode_needs_no_api_url_or_token(tmp_path):
    result = manage_check(tmp_path, DEMO_MODE="true", PROTECTO_API_URL=None, PROTECTO_AUTH_TOKEN=None)

    assert result.returncode == 0, result.stderr


def test_reading_the_settings_writes_nothing(tmp_path):
    var_dir = tmp_path / "var"

    result = manage_check(var_dir, DEMO_MODE="true")

    assert result.returncode == 0, result.stderr
    assert not var_dir.exists()


def test_a_local_secret_key_file_is_used_when_secret_key_is_unset(tmp_path):
    (tmp_path / "secret-key").write_text("k" * 40)

    assert manage_check(tmp_path, SECRET_KEY=None).returncode == 0
