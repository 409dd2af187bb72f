"""python manage.py send_alerts: detect and send the alerts due now (the code the Celery task runs)."""

from django.core.management.base import BaseCommand, CommandError

from scans.alerts import alerts_run


class Command(BaseCommand):
    help = "Write new alerts (failed, stuck, resolved, API down/recovered) and mail every one that is due, now."

    def handle(self, *args, **options) -> None:
        detected, result = alerts_run()
        created = ", ".join(f"{n} {kind}" for kind, n in detected.created.items()) or "none"
        self.stdout.write(f"new alerts: {created}; suppressed {detected.suppressed}; digests {detected.digests}")
        for alert in result.sent:
            self.stdout.write(f"sent     {alert.subject}  ->  {', '.join(alert.recipients)}")
        for alert in result.suppressed:
            self.stdout.write(f"held     {alert.subject}: {alert.suppressed_reason}")
        for alert, error in result.failed:
            self.stderr.write(f"not sent {alert.subject}: {error} (will retry)")
        self.stdout.write(f"{len(result.sent)} sent, {len(result.failed)} failed")
        if result.failed:
            raise CommandError(
                f"{len(result.failed)} alert(s) could not be sent; they stay pending and are retried"
            )
