"""The dashboard's first login, and a way to get back in: `make password` (python -m demo.login --reset).

`make run` creates one superuser, `admin`, with a random password when the database has no user at all, and
shows the login in a box at the end of start-up. The password is stored only as a hash, so it is shown once;
`make password` sets a new random one and shows that.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_USERNAME = "admin"
RESET_COMMAND = "make password"


@dataclass(frozen=True)
class Login:
    """A user name to log in with, and its password when it was just set (None: set earlier, not known)."""

    username: str
    password: str | None = None


def login_ensure(*, username: str = DEFAULT_USERNAME) -> Login:
    """Create a superuser with a random password when no user exists; else name the login to use.

    A dashboard that has users is never given another: the login named is `username` when it exists, else the
    first superuser, else the first user.
    """
    from django.contrib.auth import get_user_model

    users = get_user_model()
    existing = _login_to_show(username)
    if existing is not None:
        return Login(existing.get_username())
    password = _new_password()
    users.objects.create_superuser(username=username, email="", password=password)
    return Login(username, password)


def login_reset(*, username: str | None = None) -> Login:
    """Give a login a new random password and return it; with no user at all, create the first login instead.

    Without `username` the login reset is the one login_ensure() names. LookupError when `username` is given
    and no such user exists.
    """
    from django.contrib.auth import get_user_model

    users = get_user_model()
    if username is not None:
        user = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
        if user is None:
            raise LookupError(f"there is no user {username!r}")
    else:
        user = _login_to_show(DEFAULT_USERNAME)
        if user is None:
            return login_ensure()
    password = _new_password()
    user.set_password(password)
    user.save(update_fields=["password"])
    return Login(user.get_username(), password)


def login_box(*, login: Login, url: str, running: bool = True) -> str:
    """The box `make run` ends its start-up with: where to go, the user name, the password or how to reset it."""
    if login.password is not None:
        password = f"{login.password}   (shown only now: keep it)"
    else:
        password = "the one shown when it was set"
    lines = [
        f"Dashboard: {url}",
        f"User:      {login.username}",
        f"Password:  {password}",
        f"Lost it?   {RESET_COMMAND}   (sets and shows a new one)",
    ]
    if running:
        lines.append("Ctrl-C stops everything.")
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line.ljust(width)} |" for line in lines), rule])


def _login_to_show(username: str):  # -> User | None
    from django.contrib.auth import get_user_model

    users = get_user_model()
    named = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
    return (
        named
        or users.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        or users.objects.order_by("pk").first()
    )


def _new_password() -> str:
    # 16 URL-safe characters: about 96 bits, easy to copy from a terminal.
    return secrets.token_urlsafe(12)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m demo.login --reset [--user NAME]: set and show a new password (what `make password` runs)."""
    parser = argparse.ArgumentParser(prog="python -m demo.login", description="Set a new password for a login.")
    parser.add_argument("--reset", action="store_true", required=True, help="Set a new random password.")
    parser.add_argument("--user", default=None, help="The user to reset (default: the one `make run` shows).")
    options = parser.parse_args(argv)

    from demo.run import RunError, enable_demo_mode_if_no_api, prepare_var, setup_django

    enable_demo_mode_if_no_api(os.environ, quiet=True)
    try:
        prepare_var(os.environ)
        setup_django(migrate=False)
    except RunError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    from django.db import DatabaseError

    try:
        login = login_reset(username=options.user)
    except LookupError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"{parser.prog}: the database is not ready ({exc}); run `make run` once first", file=sys.stderr)
        return 1
    from django.conf import settings

    print(login_box(login=login, url=f"{settings.SITE_URL}/", running=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
