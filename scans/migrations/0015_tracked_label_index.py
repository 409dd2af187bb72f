"""An index of tracked scans' labels and statuses: a search's label half is answered from it (scans/search.py)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scans", "0014_snooze_window"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="scan",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True)),
                fields=["label", "status"],
                name="scan_tracked_label",
            ),
        ),
    ]
