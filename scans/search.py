"""Substring search of tracking IDs and labels, answered from an index on both databases.

PostgreSQL: Django's icontains becomes UPPER(column) LIKE UPPER('%...%'), which the GIN trigram indexes of
migration 0006 serve. SQLite: migration 0011 keeps an FTS5 table with the trigram tokenizer (SQLite 3.34 or later)
in step with scans_scan through triggers, and a search of three characters or more reads it. Shorter searches, and
an SQLite too old for the trigram tokenizer, fall back to a LIKE scan of the table: correct, only slower.
"""

from __future__ import annotations

import sqlite3

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

# Both names are used by migration 0011 too; change them together.
FTS_TABLE = "scans_scan_search"
# The trigram tokenizer indexes 3-character pieces: a shorter search cannot be answered from it.
MIN_INDEXED_LENGTH = 3


def sqlite_has_trigram() -> bool:
    """Whether this SQLite library has FTS5's trigram tokenizer (3.34 and later)."""
    return sqlite3.sqlite_version_info >= (3, 34, 0)


def scan_search_condition(q: str) -> Q:
    """Scans whose tracking ID or label contains `q`, case-insensitively."""
    if connection.vendor == "sqlite" and len(q) >= MIN_INDEXED_LENGTH and sqlite_has_trigram():
        # A quoted FTS5 phrase is taken literally; with the trigram tokenizer it matches as a substring.
        phrase = '"' + q.replace('"', '""') + '"'
        rowids = RawSQL(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [phrase])
        return Q(pk__in=rowids)
    return Q(tracking_id__icontains=q) | Q(label__icontains=q)
