"""Settings from the environment: a malformed value stops start-up with one line naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("PROTECTO_", "REFRESH_", "DATABASE_", "REDIS_"))
    }
    clean.update(VAR_DIR=str(tmp_path), **env)
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


def test_a_real_api_url_needs_a_token(tmp_path):
    result = manage_check(tmp_path, PROTECTO_API_URL="https://tenant.example.test/api/vault")

    assert result.returncode == 2
    assert "PROTECTO_AUTH_TOKEN" in result.stderr


def test_defaults_start_in_demo_mode_on_sqlite(tmp_path):
    result = manage_check(tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret-key").exists()
