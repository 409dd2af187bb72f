"""A status of its own for a scan no answer has named yet: NEW ("Not checked yet"), the default for new scans.

Until now such a scan was UNKNOWN, the same as a scan whose status the API sent in words we do not recognise.
The scans that have never been answered (no check recorded and no status text kept) become NEW; an UNKNOWN with
a status text, or one that was answered, stays UNKNOWN.

The field changes are state only: `default=` is applied by Django, never by the database, and choices are not in
the schema. Done as a real AlterField, SQLite would rebuild scans_scan, and with it drop the tally and poll-row
triggers of migrations 0011 and 0013. The status UPDATE below goes through those triggers, so the tally follows.
"""

from django.db import migrations, models
from django.utils import timezone

STATUS_CHOICES = [
    ("NEW", "Not checked yet"),
    ("PENDING", "Pending"),
    ("IN-PROGRESS", "In progress"),
    ("SUCCESS", "Succeeded"),
    ("FAILED", "Failed"),
    ("UNKNOWN", "Unknown"),
    ("NOT-FOUND", "Not found"),
]


def never_answered_to_new(apps, schema_editor):
    Scan = apps.get_model("scans", "Scan")
    never_answered = Scan.objects.filter(status="UNKNOWN", raw_status="", poll__last_checked_at__isnull=True)
    never_answered.update(status="NEW", updated_at=timezone.now())


def new_to_unknown(apps, schema_editor):
    Scan = apps.get_model("scans", "Scan")
    Scan.objects.filter(status="NEW").update(status="UNKNOWN", updated_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("scans", "0015_tracked_label_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="scan",
                    name="status",
                    field=models.CharField(choices=STATUS_CHOICES, default="NEW", max_length=16),
                ),
                migrations.AlterField(
                    model_name="statuschange",
                    name="from_status",
                    field=models.CharField(choices=STATUS_CHOICES, max_length=16),
                ),
                migrations.AlterField(
                    model_name="statuschange",
                    name="to_status",
                    field=models.CharField(choices=STATUS_CHOICES, max_length=16),
                ),
            ],
        ),
        migrations.RunPython(never_answered_to_new, new_to_unknown),
    ]
