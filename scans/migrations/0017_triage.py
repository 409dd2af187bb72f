"""Triage: acknowledgements of problem scans (one per scan) and the audit log of operator actions."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scans', '0016_not_checked_yet'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Acknowledgement',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('note', models.CharField(blank=True, max_length=200)),
                ('username', models.CharField(blank=True, max_length=150)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('scan', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='acknowledgement', to='scans.scan')),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.CreateModel(
            name='AuditEntry',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('username', models.CharField(max_length=150)),
                ('action', models.CharField(choices=[('add', 'Add'), ('archive', 'Archive'), ('restore', 'Restore'), ('label', 'Label'), ('refresh', 'Refresh'), ('mute', 'Mute'), ('unmute', 'Unmute'), ('snooze', 'Snooze'), ('end_snooze', 'End snooze'), ('acknowledge', 'Acknowledge')], max_length=16)),
                ('tracking_id', models.CharField(blank=True, max_length=128)),
                ('detail', models.CharField(blank=True, max_length=500)),
                ('scan', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='audit_entries', to='scans.scan')),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name_plural': 'audit entries',
                'indexes': [models.Index(fields=['created_at'], name='audit_created'), models.Index(fields=['scan', '-id'], name='audit_scan'), models.Index(fields=['tracking_id', '-id'], name='audit_tracking_id'), models.Index(fields=['action', '-id'], name='audit_action'), models.Index(fields=['username', '-id'], name='audit_username')],
            },
        ),
    ]
