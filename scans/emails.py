"""Alert mail: render emails/<name>-subject.txt, -body.txt and -body.html, and build the message to send."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from scans.models import Alert, Scan


def render_email(name: str, context: dict) -> tuple[str, str, str]:
    """(subject, text body, HTML body) from the three templates of one kind of mail."""
    context = {"site_url": settings.SITE_URL, **context}
    subject = " ".join(render_to_string(f"emails/{name}-subject.txt", context).split())
    text = render_to_string(f"emails/{name}-body.txt", context)
    html = render_to_string(f"emails/{name}-body.html", context)
    return subject[:250], text, html


def scan_url(scan: Scan) -> str:
    """Absolute link to the scan's page, built from SITE_URL."""
    return settings.SITE_URL + reverse("scans:detail", args=[scan.tracking_id])


def alerts_url() -> str:
    return settings.SITE_URL + reverse("scans:alerts")


def message_for(alert: Alert, *, connection=None) -> EmailMultiAlternatives:
    """The mail for an alert. Its Message-ID is fixed per alert, so a resend after a crash is recognisable."""
    domain = urlsplit(settings.SITE_URL).hostname or "localhost"
    message = EmailMultiAlternatives(
        subject=alert.subject,
        body=alert.body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(alert.recipients),
        connection=connection,
        headers={"Message-ID": f"<scan-alert-{alert.pk}@{domain}>", "X-Scan-Alert-Kind": alert.kind},
    )
    message.attach_alternative(alert.body_html, "text/html")
    return message
