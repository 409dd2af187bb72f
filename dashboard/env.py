"""Strict readers for settings that come from the environment.

Each helper raises ImproperlyConfigured naming the variable, so a malformed value stops start-up with one
line instead of surfacing later as a confusing error deep inside a worker. A variable set to blank counts as
unset, so an .env file copied from .env.example with empty values means "the defaults".
"""

import os
import zoneinfo
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value is not None and value.strip() else None


def env_str(name: str, default: str = "") -> str:
    """Return the variable's text, or the default when it is unset or blank."""
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    """Read a yes/no switch: 1/0, true/false, yes/no, on/off."""
    raw = _raw(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Read a whole number within bounds."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ImproperlyConfigured(f"{name} must be at least {minimum}{upper}, not {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0, maximum: float = float("inf")) -> float:
    """Read a positive decimal number (seconds, rates) within [minimum, maximum]."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None
    if value != value or value < minimum:  # NaN compares unequal to itself
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {raw!r}")
    if value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {raw!r}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    """Read a comma-separated list, dropping blanks."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_url(name: str, default: str = "", *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """Read a URL with one of the given schemes and a host; blank stays blank."""
    raw = env_str(name, default)
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise ImproperlyConfigured(f"{name} must be a URL starting with {' or '.join(schemes)}://, not {raw!r}")
    return raw.rstrip("/")


def env_path(name: str, default: str) -> str:
    """Read a URL path; it must start with a slash."""
    raw = env_str(name, default)
    if not raw.startswith("/") or " " in raw:
        raise ImproperlyConfigured(f"{name} must be a path starting with '/', not {raw!r}")
    return raw.rstrip("/") or "/"


def env_timezone(name: str, default: str = "UTC") -> str:
    """Read an IANA time zone name such as UTC or Europe/Berlin."""
    raw = env_str(name, default)
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(f"{name} must be a time zone name such as UTC, not {raw!r}") from None
    return raw
