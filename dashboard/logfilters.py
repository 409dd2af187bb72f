"""Logging filters for third-party chatter that no log level can single out."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class DropMessages(logging.Filter):
    """Drop records whose message text starts with one of `prefixes`; let everything else through."""

    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a record whose unformatted message starts with a listed prefix."""
        return not str(record.msg).startswith(self.prefixes)
