"""PostgreSQL only: trigram indexes so a substring search of tracking IDs and labels does not read every row.

Django's icontains becomes UPPER(column::text) LIKE UPPER('%...%') on PostgreSQL; these GIN indexes match that
expression. SQLite has no such index and keeps its full scan. If the database user may not create the pg_trgm
extension, the migration says so and goes on: search still works, only slower.
"""

import logging

from django.db import migrations, transaction

logger = logging.getLogger(__name__)

INDEXES = {
    "scan_tracking_id_trgm": "UPPER(tracking_id::text) gin_trgm_ops",
    "scan_label_trgm": "UPPER(label::text) gin_trgm_ops",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as exc:  # a permission problem must not stop the deployment
        logger.warning("pg_trgm is not available (%s); substring search will scan the table", exc)
        return
    for name, expression in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON scans_scan USING gin ({expression})")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("scans", "0005_alerts")]

    operations = [migrations.RunPython(create, drop)]
