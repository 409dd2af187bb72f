"""Substring search of tracking IDs and labels, answered from an index on both databases.

PostgreSQL: Django's icontains becomes UPPER(column) LIKE UPPER('%...%'), which the GIN trigram indexes of
migration 0006 serve. SQLite: migration 0011 keeps an FTS5 table with the trigram tokenizer (SQLite 3.34 or later)
in step with scans_scan through triggers, and a search of three characters or more reads it. Shorter searches, and
an SQLite too old for the trigram tokenizer, fall back to a LIKE scan of the table: correct, only slower.

Labels are few next to scans (a label names a recurring job), so a search of the tracked scans answers its label
half from the label index instead: the distinct labels are read by skipping from one to the next (a few index
probes, not a scan), those containing the search are picked here, and the scans carrying them are counted per
status from that index alone. A fragment of a common label matches tens of thousands of scans; counting them
through the trigram index read each row (150-250 ms at 1,000,000 scans), the label index counts them in ~7 ms.
With more than MAX_LABELS_READ distinct labels the label half is searched like the tracking ID.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

# Both names are used by migration 0011 too; change them together.
FTS_TABLE = "scans_scan_search"
# The trigram tokenizer indexes 3-character pieces: a shorter search cannot be answered from it.
MIN_INDEXED_LENGTH = 3
# Tracking IDs are searched from this many characters: one or two characters of a UUID match most scans, and no
# index serves them, so each keystroke would read the whole table (about a second at 1,000,000 scans). Labels are
# searched from the first character (from the label index).
MIN_ID_SEARCH = 3


def sqlite_has_trigram() -> bool:
    """Whether this SQLite library has FTS5's trigram tokenizer (3.34 and later)."""
    return sqlite3.sqlite_version_info >= (3, 34, 0)


# Up to this many distinct labels of tracked scans are read to answer the label half of a search (see above).
MAX_LABELS_READ = 1000

# Each step finds the next label in the partial index scan_tracked_label (migration 0015): one probe per label.
_DISTINCT_TRACKED_LABELS = """
WITH RECURSIVE labels(label) AS (
    SELECT MIN(label) FROM scans_scan WHERE archived_at IS NULL
    UNION ALL
    SELECT (SELECT MIN(label) FROM scans_scan WHERE archived_at IS NULL AND label > labels.label)
    FROM labels WHERE labels.label IS NOT NULL
)
SELECT label FROM labels WHERE label IS NOT NULL LIMIT %s
"""


@dataclass(frozen=True)
class SearchTerms:
    """A search of the tracked scans split in two: the labels containing it, and a condition on the tracking ID."""

    labels: list[str]
    tracking_id: Q

    def condition(self) -> Q:
        """Scans whose label is one of `labels`, or whose tracking ID contains the search."""
        return Q(label__in=self.labels) | self.tracking_id


def tracked_labels() -> list[str] | None:
    """The distinct labels of tracked scans ("" included), in order; None if there are more than
    MAX_LABELS_READ."""
    with connection.cursor() as cursor:
        cursor.execute(_DISTINCT_TRACKED_LABELS, [MAX_LABELS_READ + 1])
        labels = [row[0] for row in cursor.fetchall()]
    return None if len(labels) > MAX_LABELS_READ else labels


def search_terms(q: str, *, labels: list[str]) -> SearchTerms:
    """A search of tracked scans split in two, given their distinct labels (tracked_labels())."""
    wanted = q.upper()  # as PostgreSQL's UPPER(...) LIKE UPPER(...) compares
    return SearchTerms(labels=[label for label in labels if wanted in label.upper()], tracking_id=_tracking_id(q))


def scan_search_condition(q: str) -> Q:
    """Scans whose tracking ID or label contains `q`, case-insensitively (tracking IDs from MIN_ID_SEARCH)."""
    if len(q) < MIN_ID_SEARCH:
        return Q(label__icontains=q)
    if _fts_usable(q):
        rowids = RawSQL(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [_fts_phrase(q)])
        return Q(pk__in=rowids)
    return Q(tracking_id__icontains=q) | Q(label__icontains=q)


def _tracking_id(q: str) -> Q:
    """Scans whose tracking ID contains `q`, case-insensitively; none for a `q` shorter than MIN_ID_SEARCH."""
    if len(q) < MIN_ID_SEARCH:
        return Q(pk__in=[])
    if _fts_usable(q):
        # An FTS5 column filter: the phrase is matched in the tracking_id column only.
        rowids = RawSQL(
            f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [f"tracking_id : {_fts_phrase(q)}"]
        )
        return Q(pk__in=rowids)
    return Q(tracking_id__icontains=q)


def _fts_usable(q: str) -> bool:
    return connection.vendor == "sqlite" and len(q) >= MIN_INDEXED_LENGTH and sqlite_has_trigram()


def _fts_phrase(q: str) -> str:
    # A quoted FTS5 phrase is taken literally; with the trigram tokenizer it matches as a substring.
    return '"' + q.replace('"', '""') + '"'
