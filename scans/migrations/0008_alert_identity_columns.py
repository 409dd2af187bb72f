"""An alert's identity moves from the parsed string `key` into columns: scan, kind, snooze and outage.

Existing keys are parsed once, here:
  failed:<scan> | stuck:<scan> | stuck_resolved:<scan>             scan alerts (the scan FK is already set)
  api_auth:<run> | api_down:<run> | api_recovered:<run>            API alerts: <run> is the outage's first run
  any of these followed by :snoozed:<snooze>                       the snooze that held the alert back
  digest:<kind>:<uuid>                                              nothing to fill
What the keys named may be gone, since nothing tied them to rows:
  - a deleted snooze is recreated, ended, under its old pk: the alerts it held keep their identity (a stuck scan
    is alerted again after the snooze) and the outbox keeps its record of what was suppressed;
  - a refresh run deleted by the 7-day retention leaves `outage` empty: that outage is older than the retention,
    so it is neither deduplicated against nor followed by a recovery notice any more.
Going back rebuilds the keys from the columns (an orphaned outage gets "<kind>:legacy-<alert pk>").
"""

import uuid

import django.db.models.deletion
from django.db import migrations, models

API_KINDS = {"api_auth", "api_down", "api_recovered"}
RECREATED_REASON = "Recreated by migration 0008: the original snooze had been deleted."


def _fire_deferred_checks(schema_editor) -> None:
    # PostgreSQL refuses to ALTER a table with deferred foreign-key checks still pending from these updates.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def _parse(key: str) -> tuple[int | None, int | None]:
    """(target pk, snooze pk) from a key; None where the key does not say."""
    parts = key.split(":")
    target = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    snooze = int(parts[3]) if len(parts) == 4 and parts[2] == "snoozed" and parts[3].isdigit() else None
    return target, snooze


def fill_identity(apps, schema_editor) -> None:
    Alert = apps.get_model("scans", "Alert")
    AlertSnooze = apps.get_model("scans", "AlertSnooze")
    RefreshRun = apps.get_model("scans", "RefreshRun")
    alerts = list(Alert.objects.filter(is_digest=False).only("pk", "kind", "key", "created_at"))
    parsed = {alert.pk: _parse(alert.key) for alert in alerts}
    run_ids = {target for alert in alerts if alert.kind in API_KINDS for target in [parsed[alert.pk][0]] if target}
    runs = set(RefreshRun.objects.filter(pk__in=run_ids).values_list("pk", flat=True))
    snooze_ids = {snooze for _, snooze in parsed.values() if snooze}
    missing = snooze_ids - set(AlertSnooze.objects.filter(pk__in=snooze_ids).values_list("pk", flat=True))
    for snooze_id in sorted(missing):
        held = [alert.created_at for alert in alerts if parsed[alert.pk][1] == snooze_id]
        AlertSnooze.objects.create(
            pk=snooze_id, until=max(held), ended_at=max(held), created_at=min(held), reason=RECREATED_REASON
        )
    for alert in alerts:
        target, alert.snooze_id = parsed[alert.pk]
        alert.outage_id = target if alert.kind in API_KINDS and target in runs else None
    Alert.objects.bulk_update(alerts, ["snooze", "outage"], batch_size=500)
    _fire_deferred_checks(schema_editor)


def rebuild_keys(apps, schema_editor) -> None:
    Alert = apps.get_model("scans", "Alert")
    alerts = list(Alert.objects.only("pk", "kind", "is_digest", "scan_id", "outage_id", "snooze_id"))
    for alert in alerts:
        if alert.is_digest:
            alert.key = f"digest:{alert.kind}:{uuid.uuid4().hex}"
            continue
        target = alert.outage_id if alert.kind in API_KINDS else alert.scan_id
        alert.key = f"{alert.kind}:{target if target else f'legacy-{alert.pk}'}"
        if alert.snooze_id:
            alert.key += f":snoozed:{alert.snooze_id}"
    Alert.objects.bulk_update(alerts, ["key"], batch_size=500)
    _fire_deferred_checks(schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("scans", "0007_scan_no_default_ordering"),
    ]

    operations = [
        migrations.AddField(
            model_name="alert",
            name="outage",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="outage_alerts",
                to="scans.refreshrun",
            ),
        ),
        migrations.AddField(
            model_name="alert",
            name="snooze",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="held_alerts",
                to="scans.alertsnooze",
            ),
        ),
        # Nullable and no longer unique before it goes: going back, the key column is re-added empty and rebuilt
        # before this step's reverse makes it unique again.
        migrations.AlterField(
            model_name="alert",
            name="key",
            field=models.CharField(max_length=200, null=True),
        ),
        migrations.RunPython(fill_identity, rebuild_keys),
        migrations.RemoveField(
            model_name="alert",
            name="key",
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                condition=models.Q(is_digest=False, scan__isnull=False, snooze__isnull=True),
                fields=("scan", "kind"),
                name="alert_one_per_scan_kind",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                condition=models.Q(is_digest=False, scan__isnull=False, snooze__isnull=False),
                fields=("scan", "kind", "snooze"),
                name="alert_one_per_scan_kind_snooze",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                condition=models.Q(is_digest=False, outage__isnull=False, snooze__isnull=True),
                fields=("kind", "outage"),
                name="alert_one_per_outage_kind",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                condition=models.Q(is_digest=False, outage__isnull=False, snooze__isnull=False),
                fields=("kind", "outage", "snooze"),
                name="alert_one_per_outage_kind_snooze",
            ),
        ),
    ]
