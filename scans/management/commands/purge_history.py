"""python manage.py purge_history: archive finished scans, delete old history (what the hourly task runs)."""

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from scans.retention import retention_run


class Command(BaseCommand):
    help = (
        "Archive finished scans older than ARCHIVE_FINISHED_AFTER_DAYS, delete scans archived longer than "
        "DELETE_ARCHIVED_AFTER_DAYS (each when set), and delete status changes, settled alerts and refresh runs "
        "older than HISTORY_RETENTION_DAYS, in batches."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; change nothing.")
        parser.add_argument("--batch-size", type=int, help="Rows per DELETE (default RETENTION_BATCH_SIZE).")
        parser.add_argument(
            "--max-batches", type=int, help="Batches per table in this run (default RETENTION_MAX_BATCHES)."
        )

    def handle(self, *args, **options) -> None:
        result = retention_run(
            now=timezone.now(),
            batch_size=options["batch_size"],
            max_batches=options["max_batches"],
            dry_run=options["dry_run"],
        )
        verb = "would" if result.dry_run else "did"
        archive_days = settings.ARCHIVE_FINISHED_AFTER_DAYS
        archive_rule = (
            f"ended over {archive_days} days ago" if archive_days else "off: ARCHIVE_FINISHED_AFTER_DAYS=0"
        )
        self.stdout.write(f"archive finished scans ({archive_rule}): {verb} archive {result.archived}")
        delete_days = settings.DELETE_ARCHIVED_AFTER_DAYS
        delete_rule = (
            f"archived over {delete_days} days ago" if delete_days else "off: DELETE_ARCHIVED_AFTER_DAYS=0"
        )
        self.stdout.write(f"delete archived scans ({delete_rule}): {verb} delete {result.deleted_scans}")
        self.stdout.write(f"history older than {settings.HISTORY_RETENTION_DAYS} days, {verb} delete:")
        self.stdout.write(f"  status changes {result.status_changes}")
        self.stdout.write(f"  alerts         {result.alerts}")
        self.stdout.write(f"  refresh runs   {result.refresh_runs}")
        self.stdout.write(f"  audit entries  {result.audit_entries}")
        if result.unfinished:
            self.stdout.write(f"more left in {', '.join(result.unfinished)}: the next run continues")
