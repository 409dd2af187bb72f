"""Reading tracking IDs out of what people paste or upload: the one parser the Add page and `track` share.

Forgiving about form (quotes, links, `tracking_id: ...` lines, semicolon CSVs, column names in any spelling),
strict about content: an entry is one ID or one rejection with its reason, never split on spaces into several
IDs (a pasted sentence once became four scans polled for ever). The only database read is the preview's
"already tracked?".
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from scans.models import TRACKING_ID_MAX_LENGTH, Scan, tracking_id_problem

# Above this many IDs the Add page shows what it will do before doing it: a paste that large is rarely checked
# by eye, and one wrong column of a spreadsheet would otherwise register hundreds of scans.
PREVIEW_ABOVE = 50
# At most this many entries (IDs, repeats and rejects) in one submission.
MAX_ENTRIES = 5000
# A label longer than the column is cut there by the service; a longer one in a re-posted preview is tampering.
MAX_LABEL = 200

# Spaces are deliberately not separators: "bad id with spaces" is one wrong entry, not four IDs.
_SEPARATORS = re.compile(r"[,;\t]")
# Whitespace, quotes (straight, typographic, backticks) and invisible characters that copying from a web page
# or a spreadsheet leaves around an ID.
_EDGES = "\"'`\u201c\u201d\u2018\u2019\u200b\ufeff"
_TRIM = re.compile(rf"^[\s{_EDGES}]+|[\s{_EDGES}]+$")
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
# `tracking_id: X`, `tracking_id=X`, `"tracking_id": "X"`, `trackingId=X` in a log line or a JSON answer.
_KEY_VALUE = re.compile(r"tracking[ _-]?id[\"']?\s*[:=]\s*[\"']?([^\s\"',;}&]+)", re.IGNORECASE)
# Protecto's IDs: a UUID (2024 docs), or a UUID followed by digits (2025 docs), found inside a link.
_UUID_LIKE = re.compile(
    r"(?<![0-9A-Za-z_-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[0-9]*(?![0-9A-Za-z_-])",
    re.IGNORECASE,
)
# Column names, compared after lower-casing and dropping everything but letters and digits.
ID_COLUMNS = ("trackingid", "scantrackingid", "scanid", "id")  # in order of preference
LABEL_COLUMNS = ("label", "scanlabel", "name", "scanname")
_CSV_DELIMITERS = ",;\t"
_SNIFF_BYTES = 64 * 1024


class IdInputError(ValueError):
    """The input as a whole cannot be read (a CSV that is not a table, a tampered preview)."""


@dataclass
class IdInput:
    """What a submission holds: the IDs to track (first occurrence each), the repeats, and the rejects."""

    entries: list[tuple[str, str]] = field(default_factory=list)  # (tracking ID, label or "")
    repeated: list[str] = field(default_factory=list)  # an ID again, after its first occurrence
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (the entry as given, why it is no ID)

    @property
    def ids(self) -> list[str]:
        """The tracking IDs to track, in the order given."""
        return [tracking_id for tracking_id, _ in self.entries]

    @property
    def size(self) -> int:
        """Every entry read: IDs, repeats and rejects."""
        return len(self.entries) + len(self.repeated) + len(self.rejected)

    @property
    def needs_preview(self) -> bool:
        """Show before adding: something was rejected, or there are more IDs than anyone checks by eye."""
        return bool(self.rejected) or len(self.entries) > PREVIEW_ABOVE

    def leftover(self) -> str:
        """The rejected entries, one per line, to put back in the text box for fixing."""
        return "\n".join(raw for raw, _ in self.rejected if raw)

    def to_json(self) -> str:
        """The whole reading, for the preview's confirm button to post back (no state kept on the server)."""
        return json.dumps({"entries": self.entries, "repeated": self.repeated, "rejected": self.rejected})

    @classmethod
    def from_json(cls, text: str) -> IdInput:
        """A reading posted back by the preview, checked again as if it were new input."""
        try:
            data = json.loads(text)
            result = cls(
                entries=[(_checked_id(found), _checked_label(label)) for found, label in data["entries"]],
                repeated=[_checked_id(tracking_id) for tracking_id in data["repeated"]],
                rejected=[(_text(raw), _text(reason)) for raw, reason in data["rejected"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IdInputError("The preview could not be read back; paste the IDs again.") from exc
        if result.size > MAX_ENTRIES:
            raise IdInputError(f"At most {MAX_ENTRIES} IDs at once; this has {result.size}.")
        return result

    def preview(self) -> AddPreview:
        """What adding would do: the IDs split into new and already tracked, for the page that asks first."""
        # One read, kept here rather than in scans.selectors (at its 500-line limit): the preview is this
        # reading's own view of the database, and the service re-checks everything when the IDs are added.
        tracked = set(Scan.objects.filter(tracking_id__in=self.ids).values_list("tracking_id", flat=True))
        return AddPreview(
            new=[(tracking_id, label) for tracking_id, label in self.entries if tracking_id not in tracked],
            already_tracked=[tracking_id for tracking_id in self.ids if tracking_id in tracked],
            repeated=self.repeated,
            rejected=self.rejected,
        )


@dataclass
class AddPreview:
    """What adding a submission would do, shown before it is done."""

    new: list[tuple[str, str]]
    already_tracked: list[str]
    repeated: list[str]
    rejected: list[tuple[str, str]]


def read(*, pasted: str = "", csv_text: str = "") -> IdInput:
    """Read pasted text and a CSV file's text into one IdInput; raise IdInputError if the CSV is unreadable.

    Pasted text whose first line names a tracking-ID column (a spreadsheet selection with its header) is read
    as a CSV too, so its label column is used and its header never becomes an ID.
    """
    reading = _Reading()
    if _starts_with_id_header(pasted):
        _read_csv(pasted, reading)
    else:
        for cell in split_entries(pasted):
            reading.add(cell)
    if csv_text:
        _read_csv(csv_text, reading)
    return reading.result


def split_entries(text: str) -> list[str]:
    """The entries of pasted text: split on line breaks, commas, semicolons and tabs (never on spaces)."""
    return [cell for line in text.splitlines() for cell in _SEPARATORS.split(line) if _trim(cell)]


def entry_id(raw: str) -> tuple[str | None, str | None]:
    """(tracking ID, None) for an entry that is or holds one, else (None, why not).

    An entry is trimmed of whitespace and quotes; a link gives the ID in its query or path, a
    `tracking_id: X` / `tracking_id=X` / `"tracking_id": "X"` text gives X.
    """
    value = _trim(raw)
    if _URL.fullmatch(value):
        return _id_from_url(value)
    pairs = list(dict.fromkeys(_trim(found) for found in _KEY_VALUE.findall(value)))
    if len(pairs) > 1:
        return None, "names more than one tracking ID; put each on its own line"
    if pairs:
        value = pairs[0]
    elif any(char.isspace() for char in value):
        return None, "contains spaces; put one ID per line, or separate IDs with commas"
    elif column_name(value) in ID_COLUMNS + LABEL_COLUMNS:
        return None, "is a column heading, not a tracking ID"
    problem = tracking_id_problem(value)
    return (None, problem) if problem else (value, None)


def column_name(cell: str) -> str:
    """A column heading compared loosely: "Tracking ID", "tracking-id" and "TrackingId" are all "trackingid"."""
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _trim(value: str) -> str:
    return _TRIM.sub("", value)


def _id_from_url(url: str) -> tuple[str | None, str | None]:
    """The tracking ID a link names: a query parameter called tracking_id (or id), else the one UUID-like part."""
    parts = urlsplit(url)
    for key, value in parse_qsl(parts.query) + parse_qsl(parts.fragment.partition("?")[2]):
        if column_name(key) in ID_COLUMNS and not tracking_id_problem(value.strip()):
            return value.strip(), None
    found = list(dict.fromkeys(_UUID_LIKE.findall(unquote(f"{parts.path}?{parts.query}#{parts.fragment}"))))
    if len(found) == 1 and len(found[0]) <= TRACKING_ID_MAX_LENGTH:
        return found[0], None
    if found:
        return None, "is a link with several ID-like parts; paste the tracking ID itself"
    return None, "is a link without a tracking ID in it"


def _checked_id(value: object) -> str:
    if not isinstance(value, str) or tracking_id_problem(value):
        raise ValueError("not a tracking ID")
    return value


def _checked_label(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_LABEL or "\x00" in value:
        raise ValueError("not a label")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not text")
    return value


class _Reading:
    """Collects entries in order: the first occurrence of an ID counts, later ones are repeats."""

    def __init__(self) -> None:
        self.result = IdInput()
        self._seen: set[str] = set()

    def add(self, raw: str, label: str = "") -> None:
        tracking_id, problem = entry_id(raw)
        if tracking_id is None:
            self.result.rejected.append((raw.strip(), problem or ""))
        elif tracking_id in self._seen:
            self.result.repeated.append(tracking_id)
        else:
            self._seen.add(tracking_id)
            self.result.entries.append((tracking_id, label.strip()))


def _starts_with_id_header(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) > 1 and _delimiter_by_header(lines[0]) is not None


def _delimiter_by_header(line: str) -> str | None:
    """The delimiter that makes `line` a header with a tracking-ID column, if one does."""
    for delimiter in _CSV_DELIMITERS:
        cells = next(csv.reader([line], delimiter=delimiter), [])
        # A single cell splits the same with any delimiter: count it as comma, the default.
        splits = len(cells) > 1 or delimiter == ","
        if splits and any(column_name(cell) in ID_COLUMNS for cell in cells):
            return delimiter
    return None


def _delimiter(text: str) -> str:
    """Comma, semicolon (Excel in much of Europe) or tab: named by the header, else sniffed, else counted."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    by_header = _delimiter_by_header(first)
    if by_header:
        return by_header
    try:
        return csv.Sniffer().sniff(text[:_SNIFF_BYTES], delimiters=_CSV_DELIMITERS).delimiter
    except csv.Error:  # one column, or rows of different widths: the first line decides
        counts = {delimiter: first.count(delimiter) for delimiter in _CSV_DELIMITERS}
        return max(counts, key=lambda delimiter: counts[delimiter]) if any(counts.values()) else ","


def _header_columns(row: list[str]) -> tuple[int, int | None] | None:
    """(ID column, label column) if `row` is a header row, else None.

    A row is a header when a cell names the ID or label column, or when its first cell has no digit: every
    tracking ID Protecto issues has digits, column names almost never do.
    """
    names = [column_name(cell) for cell in row]
    label = next((names.index(name) for name in LABEL_COLUMNS if name in names), None)
    ids = next((names.index(name) for name in ID_COLUMNS if name in names), None)
    if ids is None and label is not None:
        ids = next((index for index in range(len(names)) if index != label), 0)
    if ids is None and row and not any(char.isdigit() for char in row[0]):
        ids = 0
    return None if ids is None else (ids, label)


def _read_csv(text: str, reading: _Reading) -> None:
    """Add a CSV's (ID, label) rows to `reading`: header columns by name, else the IDs in the first column."""
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text))
    try:
        # Numbered by the reader's line count, so "row 7" is the line a spreadsheet or editor shows.
        rows = [(reader.line_num, row) for row in reader if any(map(str.strip, row))]
    except csv.Error as exc:
        raise IdInputError(f"The CSV file could not be read: {exc}") from None
    if not rows:
        raise IdInputError("The CSV file has no rows.")
    header = _header_columns(rows[0][1]) if len(rows) > 1 else None
    id_column, label_column = header or (0, None)
    for number, row in rows[1:] if header else rows:
        cell = row[id_column] if id_column < len(row) else ""
        label = row[label_column] if label_column is not None and label_column < len(row) else ""
        if not _trim(cell):
            reading.result.rejected.append(("", f"row {number} has no tracking ID"))
        elif column_name(cell) not in ID_COLUMNS:  # a header row repeated further down is skipped, not rejected
            reading.add(cell, label)
