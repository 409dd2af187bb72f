"""Settings for the test run: the product's settings, with what a test machine lacks filled in.

Every test that talks to Protecto points the client at its own simulator (the `protecto_settings` fixture), so
the API URL here is a closed port: a test that forgets the fixture fails with "connection refused", it never
reaches anything real. The variables are only defaults: CI and developers still pick the database and broker.
"""

import os
from pathlib import Path

os.environ.setdefault("PROTECTO_API_URL", "http://127.0.0.1:9")
os.environ.setdefault("PROTECTO_AUTH_TOKEN", "test-token-not-a-secret")
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-never-used-outside-tests")

from dashboard.settings import *  # noqa: F403
from dashboard.settings import CELERY_QUEUE_DIR, VAR_DIR

# The SQLite test database and the filesystem broker live under var/, which `make run` would otherwise create.
for folder in (Path(VAR_DIR), Path(CELERY_QUEUE_DIR) / "control"):
    folder.mkdir(parents=True, exist_ok=True)
