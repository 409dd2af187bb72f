"""Mail without a mail server (dashboard/mail.py): one log line per message, never the message itself."""

import logging

from django.core.mail import EmailMultiAlternatives, get_connection


def test_each_message_is_one_line_with_its_recipients_and_subject(caplog):
    body = "A Protecto data scan failed.\n\nhttp://127.0.0.1:8000/scans/abc/\n" * 20
    messages = []
    for subject in ("[Scan FAILED] Nightly CRM sweep", "[Scan STUCK] HR share audit"):
        message = EmailMultiAlternatives(subject, body, "scan-alerts@localhost", ["ops@example.com", "b@x.test"])
        message.attach_alternative(f"<p>{body}</p>", "text/html")
        messages.append(message)
    connection = get_connection("dashboard.mail.OneLineConsoleBackend")

    with caplog.at_level(logging.INFO, logger="dashboard.mail"):
        sent = connection.send_messages(messages)

    assert sent == 2
    assert [record.getMessage() for record in caplog.records] == [
        "mail to ops@example.com, b@x.test (not sent: no EMAIL_HOST): [Scan FAILED] Nightly CRM sweep",
        "mail to ops@example.com, b@x.test (not sent: no EMAIL_HOST): [Scan STUCK] HR share audit",
    ]
