"""Maintenance windows get a start (AlertSnooze.starts_at), so one can be scheduled ahead.

A snooze made before this migration began when it was made; one that was already over gets its end, so every
row keeps start <= end for the new check constraint.
"""

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.db.models.functions import Least


def starts_when_made(apps, schema_editor):
    AlertSnooze = apps.get_model("scans", "AlertSnooze")
    AlertSnooze.objects.update(starts_at=Least("created_at", "until"))


class Migration(migrations.Migration):

    dependencies = [
        ('scans', '0013_poll_state_table'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='alertsnooze',
            name='starts_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(starts_when_made, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='alertsnooze',
            index=models.Index(condition=models.Q(('ended_at__isnull', True)), fields=['until'], name='snooze_open_until'),
        ),
        migrations.AddConstraint(
            model_name='alertsnooze',
            constraint=models.CheckConstraint(condition=models.Q(('starts_at__lte', models.F('until'))), name='snooze_starts_before_it_ends'),
        ),
    ]
