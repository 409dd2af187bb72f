"""A first login for a fresh dashboard: one superuser with a random password, shown once."""

from __future__ import annotations

import secrets
import sys
from typing import TextIO

from django.contrib.auth import get_user_model


def ensure_login(*, username: str = "admin", out: TextIO | None = None) -> str | None:
    """Create a superuser with a random password when no user exists; print and return the password.

    Returns None (and creates nothing) when any user exists: a dashboard that has logins is never given another.
    """
    out = out or sys.stdout
    users = get_user_model()
    if users.objects.exists():
        out.write("Users exist already; no login created.\n")
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(username=username, email="", password=password)
    # The password is shown this once and stored only as a hash.
    out.write(f"Created login  user: {username}  password: {password}\n")
    out.write("Keep it now: it will not be shown again (change it with manage.py changepassword).\n")
    return password
