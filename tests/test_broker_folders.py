"""The embedded broker (kombu's filesystem transport, used when REDIS_URL is unset) writes only under var/."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PUBLISH = (
    "import django; django.setup(); from dashboard.celery import app; app.send_task('scans.tasks.send_alerts')"
)


def test_publishing_a_task_writes_the_queue_and_its_control_files_under_var_only(tmp_path):
    var_dir = tmp_path / "var"
    (var_dir / "celery-queue" / "control").mkdir(parents=True)  # what `make run` prepares
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        VAR_DIR=str(var_dir),
        DEMO_MODE="true",
        SECRET_KEY="broker-folder-test-key-0123456789abcdef",
        PYTHONPATH=str(ROOT),
    )

    result = subprocess.run(
        [sys.executable, "-c", _PUBLISH], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["var"]  # no ./control beside it
    assert list((var_dir / "celery-queue" / "control").glob("*.exchange"))
    assert [path for path in (var_dir / "celery-queue").iterdir() if path.suffix == ".msg"]
