"""Indexes for pages that do not care about the table's size.

- scan_status_order: a status chip in the default order, and the failed part of "failed & stuck first".
- scan_pending_since, scan_running_since: the stuck count, one range of a small index per half.
- scan_ended becomes scan_ended_covering (ended_at, status, started_at): the header's 24 h figures from the index
  alone; it still serves the "ended" sort. Only a scan that ends changes it, never a poll.
- scan_status_submitted goes: its (status, submitted_at) lookups are covered by scan_tracked_status, and no list
  orders by submitted_at alone. scan_tracking_prefix goes: it duplicates the unique index on SQLite, and on
  PostgreSQL the varchar_pattern_ops index Django creates itself for a unique CharField.
- SQLite only: an FTS5 table with the trigram tokenizer over tracking_id and label, kept in step with scans_scan by
  triggers (inserts, deletes, and updates of those two columns only: a poll never touches it). scans/search.py
  reads it. An SQLite without the trigram tokenizer gets no table, and search scans the table as before.
  A later migration that makes SQLite rebuild scans_scan (some AlterFields do) drops these triggers with the old
  table: it must run CREATE's triggers again and a 'rebuild'.
- ScanStatusTally, kept by triggers on both databases: the chips' and header's counts per status without counting
  every row (scans.models.ScanStatusTally says how).
"""

import sqlite3

import django.db.models.functions.comparison
from django.db import migrations, models

FTS_TABLE = "scans_scan_search"  # scans.search.FTS_TABLE

CREATE = [
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
    "tracking_id, label, content='scans_scan', content_rowid='id', tokenize='trigram')",
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')",
    f"CREATE TRIGGER scans_scan_search_insert AFTER INSERT ON scans_scan BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, tracking_id, label) VALUES (new.id, new.tracking_id, new.label); END",
    f"CREATE TRIGGER scans_scan_search_delete AFTER DELETE ON scans_scan BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, tracking_id, label) "
    f"VALUES ('delete', old.id, old.tracking_id, old.label); END",
    f"CREATE TRIGGER scans_scan_search_update AFTER UPDATE OF tracking_id, label ON scans_scan BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, tracking_id, label) "
    f"VALUES ('delete', old.id, old.tracking_id, old.label); "
    f"INSERT INTO {FTS_TABLE}(rowid, tracking_id, label) VALUES (new.id, new.tracking_id, new.label); END",
]
DROP = [
    "DROP TRIGGER IF EXISTS scans_scan_search_insert",
    "DROP TRIGGER IF EXISTS scans_scan_search_delete",
    "DROP TRIGGER IF EXISTS scans_scan_search_update",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
]


TALLY = "scans_scanstatustally"
# Both databases: one +1 row for the (status, tracked) pair a scan enters, one -1 row for the pair it leaves.
# The update trigger fires only when the pair really changes, so a poll that rewrites the same status adds nothing.
SQLITE_TALLY = [
    f"CREATE TRIGGER scans_tally_insert AFTER INSERT ON scans_scan BEGIN "
    f"INSERT INTO {TALLY}(status, tracked, delta) VALUES (new.status, new.archived_at IS NULL, 1); END",
    f"CREATE TRIGGER scans_tally_delete AFTER DELETE ON scans_scan BEGIN "
    f"INSERT INTO {TALLY}(status, tracked, delta) VALUES (old.status, old.archived_at IS NULL, -1); END",
    f"CREATE TRIGGER scans_tally_update AFTER UPDATE OF status, archived_at ON scans_scan "
    f"WHEN old.status IS NOT new.status OR (old.archived_at IS NULL) IS NOT (new.archived_at IS NULL) BEGIN "
    f"INSERT INTO {TALLY}(status, tracked, delta) VALUES (old.status, old.archived_at IS NULL, -1); "
    f"INSERT INTO {TALLY}(status, tracked, delta) VALUES (new.status, new.archived_at IS NULL, 1); END",
]
POSTGRES_TALLY = [
    f"""CREATE FUNCTION scans_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO {TALLY}(status, tracked, delta) VALUES (OLD.status, OLD.archived_at IS NULL, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO {TALLY}(status, tracked, delta) VALUES (NEW.status, NEW.archived_at IS NULL, 1);
    END IF;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER scans_tally_insert_delete AFTER INSERT OR DELETE ON scans_scan "
    "FOR EACH ROW EXECUTE FUNCTION scans_tally()",
    "CREATE TRIGGER scans_tally_update AFTER UPDATE OF status, archived_at ON scans_scan FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status OR (OLD.archived_at IS NULL) <> (NEW.archived_at IS NULL)) "
    "EXECUTE FUNCTION scans_tally()",
]
BACKFILL = (
    f"INSERT INTO {TALLY}(status, tracked, delta) "
    "SELECT status, archived_at IS NULL, COUNT(*) FROM scans_scan GROUP BY status, archived_at IS NULL"
)


def create_tally_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"sqlite": SQLITE_TALLY, "postgresql": POSTGRES_TALLY}.get(vendor, [])
    for statement in [*statements, BACKFILL]:
        schema_editor.execute(statement, params=None)


def drop_tally_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for name in ("insert", "delete", "update"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS scans_tally_{name}")
    elif schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS scans_tally() CASCADE")


def create_search_table(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 34, 0):
        for statement in CREATE:
            schema_editor.execute(statement)


def drop_search_table(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("scans", "0010_blind_spots")]

    operations = [
        migrations.RemoveIndex(model_name="scan", name="scan_status_submitted"),
        migrations.RemoveIndex(model_name="scan", name="scan_tracking_prefix"),
        migrations.AddIndex(
            model_name="scan",
            index=models.Index(
                models.F("status"),
                django.db.models.functions.comparison.Coalesce("submitted_at", "created_at"),
                models.F("id"),
                condition=models.Q(("archived_at__isnull", True)),
                name="scan_status_order",
            ),
        ),
        migrations.AddIndex(
            model_name="scan",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True), ("status", "PENDING")),
                fields=["submitted_at"],
                name="scan_pending_since",
            ),
        ),
        migrations.AddIndex(
            model_name="scan",
            index=models.Index(
                condition=models.Q(("archived_at__isnull", True), ("status", "IN-PROGRESS")),
                fields=["started_at"],
                name="scan_running_since",
            ),
        ),
        migrations.RemoveIndex(model_name="scan", name="scan_ended"),
        migrations.AddIndex(
            model_name="scan",
            index=models.Index(fields=["ended_at", "status", "started_at"], name="scan_ended_covering"),
        ),
        migrations.RunPython(create_search_table, drop_search_table),
        migrations.CreateModel(
            name="ScanStatusTally",
            fields=[
                (
                    "id",
                    models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"),
                ),
                ("status", models.CharField(max_length=16)),
                ("tracked", models.BooleanField()),
                ("delta", models.IntegerField()),
            ],
        ),
        migrations.RunPython(create_tally_triggers, drop_tally_triggers),
    ]
