"""Logging filter that keeps the Protecto token out of every log line."""

import logging


class RedactTokenFilter(logging.Filter):
    """Replace the configured token with *** wherever it would appear in a formatted record."""

    def filter(self, record: logging.LogRecord) -> bool:
        from django.conf import settings

        token = getattr(settings, "PROTECTO_AUTH_TOKEN", "")
        if token:
            message = record.getMessage()
            if token in message:
                record.msg = message.replace(token, "***")
                record.args = None
        return True
