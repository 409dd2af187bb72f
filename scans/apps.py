import sqlite3

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _use_sqlite_real_parameter_limit(sender, connection, **kwargs) -> None:
    """Let Django use SQLite's real bound-parameter limit instead of its conservative 999.

    With 999, a bulk update of one refresh batch is split into several queries; SQLite builds since 3.32 allow
    32,766 or more. (Django 6 reads the real limit itself.)
    """
    if connection.vendor == "sqlite":
        connection.features.max_query_params = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Protecto scans"

    def ready(self) -> None:
        connection_created.connect(_use_sqlite_real_parameter_limit, dispatch_uid="scans-sqlite-limit")
