"""The login `make run` shows (demo/login.py): one superuser `admin` on a fresh dashboard, and `make password`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model

from demo.login import Login, login_box, login_ensure, login_reset

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


def test_a_fresh_dashboard_gets_one_superuser_admin_whose_password_is_returned_once():
    first = login_ensure()
    again = login_ensure()

    [user] = get_user_model().objects.all()
    assert user.username == "admin" and user.is_superuser
    assert first.username == "admin" and authenticate(username="admin", password=first.password) == user
    # The password is stored as a hash only: a second start cannot show it and says whom to log in as.
    assert again == Login("admin", None)


def test_nothing_is_created_when_a_user_exists_and_that_user_is_named(django_user_model):
    django_user_model.objects.create_user(username="olivia", password="pw-olivia-1")

    assert login_ensure() == Login("olivia", None)
    assert list(django_user_model.objects.values_list("username", flat=True)) == ["olivia"]


def test_a_reset_gives_the_shown_login_a_new_working_password():
    old = login_ensure()

    new = login_reset()

    assert new.username == "admin" and new.password != old.password
    assert authenticate(username="admin", password=old.password) is None
    assert authenticate(username="admin", password=new.password) is not None


def test_a_reset_of_an_unknown_user_changes_nothing(django_user_model):
    login_ensure()
    hashes = list(django_user_model.objects.values_list("password", flat=True))

    with pytest.raises(LookupError, match="no user 'nobody'"):
        login_reset(username="nobody")

    assert list(django_user_model.objects.values_list("password", flat=True)) == hashes


def test_the_box_names_the_user_the_password_and_how_to_get_a_new_one():
    box = login_box(login=Login("admin", "s3cret-Pass"), url="http://127.0.0.1:8123/").splitlines()
    later = login_box(login=Login("admin", None), url="http://127.0.0.1:8123/")

    assert len({len(line) for line in box}) == 1  # a closed box: every line as wide as the frame
    text = "\n".join(box)
    assert "http://127.0.0.1:8123/" in text and "admin" in text and "s3cret-Pass" in text
    assert "make password" in text and "make password" in later
    assert "s3cret-Pass" not in later


def test_make_password_sets_a_new_password_from_the_command_line(tmp_path):
    # The real command in its own process, against a database of its own (the test database is not shared).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROTECTO_", "DATABASE_", "DJANGO_"))}
    env.update(VAR_DIR=str(tmp_path), DEMO_MODE="", DJANGO_SETTINGS_MODULE="dashboard.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env={**env, "DEMO_MODE": "true"})

    result = subprocess.run(
        [sys.executable, "-m", "demo.login", "--reset"], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    [password_line] = [line for line in result.stdout.splitlines() if "Password:" in line]
    password = password_line.split("Password:")[1].split()[0]
    assert "User:      admin" in result.stdout and len(password) >= 16
    check = (
        "from django.contrib.auth import authenticate;"
        f"print(authenticate(username='admin', password={password!r}) is not None)"
    )
    shell = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", check],
        cwd=ROOT,
        env={**env, "DEMO_MODE": "true"},
        capture_output=True,
        text=True,
    )
    assert shell.stdout.strip() == "True", shell.stderr
