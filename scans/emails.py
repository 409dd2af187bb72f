"""Alert mail: render emails/<name>-subject.txt, -body.txt and -body.html, and build the message to send."""

from __future__ import annotations

import unicodedata
from datetime import UTC
from email.header import Header
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from scans.models import Alert, Scan

# A subject names what and why ("[FAILED] HR share audit — Permission denied reading …"); past this it is cut,
# reason first (it comes last), so the whole line shows in a mail list.
SUBJECT_MAX_CHARS = 100
ELLIPSIS = "…"


def render_email(name: str, context: dict) -> tuple[str, str, str]:
    """(subject, text body, HTML body) from the three templates of one kind of mail.

    Rendered in UTC whatever zone a request activated: a mail goes to many readers, so its times say "UTC".
    """
    context = {"site_url": settings.SITE_URL, **context}
    with timezone.override(UTC):
        subject = subject_line(render_to_string(f"emails/{name}-subject.txt", context))
        text = render_to_string(f"emails/{name}-body.txt", context)
        html = render_to_string(f"emails/{name}-body.html", context)
    return subject, text, html


def subject_line(text: str) -> str:
    """One line of at most SUBJECT_MAX_CHARS: whitespace runs (newlines too) become one space, control and
    format characters go, so no value a scan carries can add a header or break the line."""
    printable = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in text)
    line = " ".join(printable.split())
    if len(line) <= SUBJECT_MAX_CHARS:
        return line
    return line[: SUBJECT_MAX_CHARS - len(ELLIPSIS)].rstrip() + ELLIPSIS


def scan_url(scan: Scan) -> str:
    """Absolute link to the scan's page, built from SITE_URL."""
    return settings.SITE_URL + reverse("scans:detail", args=[scan.tracking_id])


def alerts_url() -> str:
    return settings.SITE_URL + reverse("scans:alerts")


class AlertMessage(EmailMultiAlternatives):
    """A multipart mail whose non-ASCII subject (the em dash before the reason) reads back without a leading space.

    Django encodes such a subject without knowing the header's name, so the first encoded word may not fit beside
    "Subject: " and goes to a folded line of its own: a parser then reads " [FAILED] …". Encoding it knowing the
    name keeps the first word on the header's own line.
    """

    def message(self, *args, **kwargs):
        message = super().message(*args, **kwargs)
        if not self.subject.isascii():
            encoded = Header(self.subject, self.encoding or settings.DEFAULT_CHARSET, header_name="Subject")
            # One line of encoded words: Django's own check (no newline) passes, then it folds them between words.
            del message["Subject"]
            message["Subject"] = encoded.encode(linesep=" ")
        return message


def message_for(alert: Alert, *, connection=None) -> EmailMultiAlternatives:
    """The mail for an alert. Its Message-ID is fixed per alert, so a resend after a crash is recognisable."""
    domain = urlsplit(settings.SITE_URL).hostname or "localhost"
    message = AlertMessage(
        subject=alert.subject,
        body=alert.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(alert.recipients),
        connection=connection,
        headers={"Message-ID": f"<scan-alert-{alert.pk}@{domain}>", "X-Scan-Alert-Kind": alert.kind},
    )
    message.attach_alternative(alert.body_html, "text/html")
    return message
