"""A mail backend for a dashboard without a mail server: one log line per message instead of the message."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

logger = logging.getLogger(__name__)


class OneLineConsoleBackend(BaseEmailBackend):
    """Log "mail to <recipients>: <subject>" for each message and send nothing.

    Django's console backend prints every message whole, MIME parts and HTML included (about 50 lines per
    alert); with no EMAIL_HOST (the demo) the recipients and the subject are what a reader of the log needs.
    The line goes through logging, so it carries a timestamp and LOG_LEVEL applies to it.
    """

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        """Log one line per message; return how many there were, as a backend that delivered them would."""
        for message in email_messages:
            recipients = ", ".join(message.recipients()) or "nobody"
            logger.info("mail to %s (not sent: no EMAIL_HOST): %s", recipients, message.subject)
        return len(email_messages)
