"""python manage.py refresh_scans [--all]: run one refresh cycle now and say what happened."""

from django.core.management.base import BaseCommand, CommandError

from scans.models import RefreshRun
from scans.refresh import scans_refresh_due

# Outcomes that leave the dashboard blind for some scans: a script or a cron job must see them as a failure.
FAILING_OUTCOMES = (
    RefreshRun.Outcome.FAILED,
    RefreshRun.Outcome.DEGRADED,
    RefreshRun.Outcome.AUTH_REFUSED,
    RefreshRun.Outcome.PARTIAL,
)


class Command(BaseCommand):
    help = (
        "Poll Protecto once, now, for every due non-final scan, in this process: the same claims and batches"
        " the Celery workers run, one batch after another."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--all", action="store_true", help="poll every non-final scan, whatever its schedule")

    def handle(self, *args, **options) -> None:
        run = scans_refresh_due(ignore_schedule=options["all"])
        self.stdout.write(
            f"checked {run.ids_asked}, answered {run.ids_answered}, changed {run.changed}, "
            f"failed batches {run.errors}, unsaved scans {run.write_failures}, API calls {run.api_calls}: "
            f"{run.get_outcome_display()} ({run.outcome})"
        )
        if run.error_text:
            self.stderr.write(run.error_text)
        if run.outcome in FAILING_OUTCOMES:
            raise CommandError(f"refresh ended {run.outcome}: {run.get_outcome_display()}")
