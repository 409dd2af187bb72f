"""The poll's bookkeeping moves out of the wide scans table into scans_scanpoll (scans.models.ScanPoll).

Next check, claim, last checked and last reported are written by every poll, most polls write nothing else: in
their own narrow table an unchanged poll no longer rewrites the scan row, its answer and its dozen indexes.
A trigger on each database inserts a scan's poll row with the scan itself (whatever inserts it: the service, the
admin, a bulk load), due at once unless the scan is final or archived. The columns move with their values.
On SQLite the old columns go by ALTER TABLE DROP COLUMN (no table rebuild), so migration 0011's search and tally
triggers stay in place.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

POLL = "scans_scanpoll"
# Due at once, unless final or archived: the rule of Scan.is_final and ScanQuerySet.tracked, in SQL.
FIRST_CHECK = "CASE WHEN new.status IN ('SUCCESS', 'FAILED') OR new.archived_at IS NOT NULL THEN NULL ELSE new.created_at END"
SQLITE_TRIGGER = (
    f"CREATE TRIGGER scans_poll_insert AFTER INSERT ON scans_scan BEGIN "
    f"INSERT INTO {POLL}(scan_id, next_check_at, claim_token) VALUES (new.id, {FIRST_CHECK}, ''); END"
)
POSTGRES_TRIGGER = [
    f"""CREATE FUNCTION scans_poll_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {POLL}(scan_id, next_check_at, claim_token) VALUES (NEW.id, {FIRST_CHECK.replace("new.", "NEW.")}, '');
    RETURN NULL;
END $$""",
    "CREATE TRIGGER scans_poll_insert AFTER INSERT ON scans_scan FOR EACH ROW EXECUTE FUNCTION scans_poll_insert()",
]
COPY = (
    f"INSERT INTO {POLL}(scan_id, next_check_at, claim_token, last_checked_at, last_reported_at) "
    "SELECT id, next_check_at, claim_token, last_checked_at, last_reported_at FROM scans_scan"
)
COPY_BACK = (
    "UPDATE scans_scan SET next_check_at = p.next_check_at, claim_token = p.claim_token, "
    "last_checked_at = p.last_checked_at, last_reported_at = p.last_reported_at "
    f"FROM {POLL} AS p WHERE p.scan_id = scans_scan.id"
)


def move_poll_state(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    schema_editor.execute(COPY)
    statements = {"sqlite": [SQLITE_TRIGGER], "postgresql": POSTGRES_TRIGGER}.get(vendor, [])
    for statement in statements:
        schema_editor.execute(statement, params=None)


def move_poll_state_back(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS scans_poll_insert() CASCADE")
    else:
        schema_editor.execute("DROP TRIGGER IF EXISTS scans_poll_insert")
    schema_editor.execute(COPY_BACK)


class Migration(migrations.Migration):
    dependencies = [("scans", "0012_exact_run_tally_and_change_age")]

    operations = [
        migrations.CreateModel(
            name="ScanPoll",
            fields=[
                (
                    "scan",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="poll",
                        serialize=False,
                        to="scans.scan",
                    ),
                ),
                ("next_check_at", models.DateTimeField(blank=True, default=django.utils.timezone.now, null=True)),
                ("claim_token", models.CharField(blank=True, editable=False, max_length=32)),
                ("last_checked_at", models.DateTimeField(blank=True, null=True)),
                ("last_reported_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.RunPython(move_poll_state, move_poll_state_back),
        migrations.RemoveIndex(model_name="scan", name="scan_due"),
        migrations.RemoveIndex(model_name="scan", name="scan_claim"),
        migrations.RemoveField(model_name="scan", name="claim_token"),
        migrations.RemoveField(model_name="scan", name="last_checked_at"),
        migrations.RemoveField(model_name="scan", name="last_reported_at"),
        migrations.RemoveField(model_name="scan", name="next_check_at"),
        migrations.AddIndex(
            model_name="scanpoll",
            index=models.Index(
                condition=models.Q(("next_check_at__isnull", False)), fields=["next_check_at"], name="poll_due"
            ),
        ),
        migrations.AddIndex(
            model_name="scanpoll",
            index=models.Index(
                condition=models.Q(("claim_token", ""), _negated=True), fields=["claim_token"], name="poll_claim"
            ),
        ),
    ]
