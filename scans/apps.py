import sqlite3

from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def _use_sqlite_real_parameter_limit(sender, connection, **kwargs) -> None:
    """Let Django use SQLite's real bound-parameter limit instead of its conservative 999.

    With 999, a bulk update of one refresh batch is split into several queries; SQLite builds since 3.32 allow
    32,766 or more. (Django 6 reads the real limit itself.)
    """
    if connection.vendor == "sqlite":
        connection.features.max_query_params = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def _empty_tally_of_flushed_tables(sender, using, **kwargs) -> None:
    """After `flush` (which ends by sending post_migrate), an empty scans table has an empty tally.

    SQLite's flush may delete the tally's rows before the scans' rows, whose delete triggers then leave -1 rows
    behind; a scan added next would add its +1 to them and the header would count it as none.
    """
    from scans.models import Scan, ScanStatusTally

    if not Scan.objects.using(using).exists():
        ScanStatusTally.objects.using(using).all().delete()


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Protecto scans"

    def ready(self) -> None:
        connection_created.connect(_use_sqlite_real_parameter_limit, dispatch_uid="scans-sqlite-limit")
        post_migrate.connect(_empty_tally_of_flushed_tables, sender=self, dispatch_uid="scans-flushed-tally")
