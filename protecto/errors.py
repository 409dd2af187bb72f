"""The failures of talking to Protecto, each a one-line message safe to show an operator.

Every error the client raises is a `ProtectoError`. Its `permanent` flag says whether trying again can help:
a refused token stays refused until someone changes it, while a timeout or a 503 may pass.
"""

from __future__ import annotations

import re

# Longest operator-facing message; longer text is cut so one bad answer cannot flood a page or a log line.
MESSAGE_LIMIT = 300

_WHITESPACE = re.compile(r"\s+")


def one_line(text: str, *, limit: int = MESSAGE_LIMIT) -> str:
    """Collapse whitespace to single spaces and cut the text to `limit` characters."""
    flat = _WHITESPACE.sub(" ", str(text)).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


class ProtectoError(Exception):
    """Base of every failure talking to Protecto; str() is a one-line message safe to show an operator."""

    permanent: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(one_line(message))
        self.status_code = status_code


class ProtectoAuthError(ProtectoError):
    """Protecto refused the token (401/403); retrying cannot help until the token is changed."""

    permanent = True


class ProtectoUnavailable(ProtectoError):
    """Protecto could not be reached or kept failing (connection, timeout, 5xx, 429) after all retries."""


class ProtectoBadAnswer(ProtectoError):
    """Protecto answered, but not with something usable: not JSON, wrong shape, a 4xx or `success` false."""
