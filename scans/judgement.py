"""Judging Protecto's answer for one scan before any of it is stored: answers are judged, not trusted.

Pure functions over a Scan in memory and the ScanReports the answer carried for its ID; nothing here queries.
An answer is first made storable (`sanitise_report`: NUL removed, the token redacted, text cut to its column,
timestamps a database can't hold or no clock could have produced rejected, the raw item capped), then one item
is chosen when the ID was listed more than once (`pick_report`), and last the chosen item is weighed against
what the scan already knows (`judge_answer`): the lifecycle only moves forward unless the API's own submission
time shows a resubmission, and an unrecognised status never overwrites a known one. Everything that was not
applied as sent is said in a short warning for `Scan.answer_warning`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from protecto import ScanReport
from scans.models import Scan

REDACTED = "***"
# Stored raw answer per scan, in bytes of JSON: enough for any honest item, small enough for a fast page.
RAW_ANSWER_MAX_BYTES = 16 * 1024
# error_message is a TextField; an honest error is a few lines, and the page and the mails show it whole.
ERROR_MESSAGE_MAX_CHARS = 4000
WARNING_MAX_CHARS = 500
CUT_MARK = "… (cut)"
# Deeper than any honest item; the cap keeps a hostile nesting from costing a recursion error.
_RAW_MAX_DEPTH = 32
# A timestamp before this, or this far past the cycle's time, comes from no clock that ran the scan.
OLDEST_PLAUSIBLE = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=366)
TIMESTAMP_FIELDS = ("submitted_at", "started_at", "ended_at")
_TEXT_FIELDS = ("raw_status", "error_message", "data_source", "object_path")

# The lifecycle's order: an answer may only move a scan to an equal or higher rank. NEW (not checked yet), UNKNOWN
# and NOT FOUND say nothing about progress, so anything the API reports moves a scan on from them.
LIFECYCLE_RANK = {
    Scan.Status.NEW: 0,
    Scan.Status.UNKNOWN: 0,
    Scan.Status.NOT_FOUND: 0,
    Scan.Status.PENDING: 1,
    Scan.Status.IN_PROGRESS: 2,
    Scan.Status.SUCCESS: 3,
    Scan.Status.FAILED: 3,
}
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Verdict:
    """What to do with one scan's answer: the answer-field values to set (empty: nothing applies), and why."""

    values: dict[str, object]
    warnings: tuple[str, ...] = ()


def redact(text: str, token: str) -> str:
    """The text with every occurrence of the token replaced by ***."""
    return text.replace(token, REDACTED) if token else text


def cut(text: str, limit: int) -> str:
    """The text cut to `limit` characters, marked as cut when it was longer."""
    return text if len(text) <= limit else text[: max(limit - len(CUT_MARK), 0)] + CUT_MARK


def group_by_id(reports: list[ScanReport]) -> dict[str, list[ScanReport]]:
    """The answer's items per tracking ID, in the order the answer listed them."""
    grouped: dict[str, list[ScanReport]] = defaultdict(list)
    for report in reports:
        grouped[report.tracking_id].append(report)
    return grouped


def judge_answer(scan: Scan, reports: list[ScanReport], *, token: str, now: datetime) -> Verdict:
    """Judge every item the answer carried for this scan's ID against what the scan already knows."""
    warnings: list[str] = []
    clean = []
    for report in reports:
        sanitised, notes = sanitise_report(report, token=token, now=now)
        clean.append(sanitised)
        warnings.extend(notes)
    report, conflict = pick_report(clean)
    if conflict:
        warnings.append(conflict)
    applies, resubmitted, note = _lifecycle_check(scan, report)
    if note:
        warnings.append(note)
    if not applies:
        return Verdict(values={}, warnings=tuple(dict.fromkeys(warnings)))
    values = _merged_values(scan, report, resubmitted=resubmitted)
    if scan.error_message and values["error_message"] != scan.error_message:
        # The timeline keeps no errors, so the one this answer replaces is kept here.
        what = "cleared" if not values["error_message"] else "replaced"
        warnings.append(f"error {what}; it was: {cut(scan.error_message, 150)}")
    return Verdict(values=values, warnings=tuple(dict.fromkeys(warnings)))


def warning_line(warnings: tuple[str, ...] | list[str], *, now: datetime, token: str) -> str:
    """One bounded line for Scan.answer_warning: when, then each warning."""
    text = f"{now.astimezone(UTC):%Y-%m-%d %H:%M} UTC: " + "; ".join(warnings)
    return cut(redact(" ".join(text.split()), token), WARNING_MAX_CHARS)


# --- making an item storable ---------------------------------------------------------------------------------


def sanitise_report(report: ScanReport, *, token: str, now: datetime) -> tuple[ScanReport, list[str]]:
    """The report with every value made storable, and a note for each value that had to be changed or dropped."""
    notes: list[str] = []
    changes: dict[str, object] = {}
    with_nul = []
    for name in _TEXT_FIELDS:
        value = getattr(report, name)
        if "\x00" in value:
            with_nul.append(name)
        changes[name] = cut(redact(value.replace("\x00", ""), token), _text_limit(name))
    if with_nul:
        notes.append(f"NUL bytes removed from {', '.join(with_nul)}")
    for name in TIMESTAMP_FIELDS:
        value = getattr(report, name)
        problem = timestamp_problem(value, now=now)
        if problem:
            notes.append(f"{name} {value.isoformat()} ignored: {problem}")
            changes[name] = None
    raw, raw_notes = storable_raw(report.raw, token=token)
    notes.extend(raw_notes)
    return replace(report, raw=raw, **changes), notes


def timestamp_problem(value: datetime | None, *, now: datetime) -> str | None:
    """Why a timestamp cannot be stored as a scan's time, or None when it can (or is absent)."""
    if value is None:
        return None
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return "outside the range a database can hold"
    if utc < OLDEST_PLAUSIBLE or utc > now + FUTURE_SLACK:
        return "not a plausible time"
    return None


def storable_raw(raw: object, *, token: str) -> tuple[object, list[str]]:
    """The raw item as JSON every database takes (no NUL, no NaN, no token), capped to RAW_ANSWER_MAX_BYTES."""
    found: set[str] = set()
    clean = _clean_json(raw, token=token, found=found, depth=0)
    notes = [f"{what} in the raw answer" for what in sorted(found)]
    text = json.dumps(clean, ensure_ascii=False)
    size = len(text.encode())
    if size <= RAW_ANSWER_MAX_BYTES:
        return clean, notes
    notes.append(f"raw answer of {size} bytes stored cut to {RAW_ANSWER_MAX_BYTES // 1024} KB")
    return _truncated(text, size), notes


def _text_limit(name: str) -> int:
    return Scan._meta.get_field(name).max_length or ERROR_MESSAGE_MAX_CHARS


def _clean_json(value: object, *, token: str, found: set[str], depth: int) -> object:
    if isinstance(value, str):
        if "\x00" in value:
            found.add("NUL bytes removed")
        return redact(value.replace("\x00", ""), token)
    if isinstance(value, float) and not math.isfinite(value):
        found.add("non-finite numbers written as text")  # NaN and Infinity are not JSON: PostgreSQL refuses them
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _RAW_MAX_DEPTH:
        found.add("deep nesting cut")
        return "(nested too deep)"
    if isinstance(value, dict):
        return {
            _clean_json(str(key), token=token, found=found, depth=depth): _clean_json(
                item, token=token, found=found, depth=depth + 1
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean_json(item, token=token, found=found, depth=depth + 1) for item in value]
    return _clean_json(str(value), token=token, found=found, depth=depth)


def _truncated(text: str, size: int) -> dict:
    """A marker standing for a raw answer too big to keep: its size and as much of its start as fits."""
    head = text.encode()[:RAW_ANSWER_MAX_BYTES].decode(errors="ignore")
    while True:
        marker = {"truncated": True, "bytes": size, "head": head}
        # Quotes and control characters grow when escaped, so measure the stored form, then trim the overshoot.
        over = len(json.dumps(marker, ensure_ascii=False).encode()) - RAW_ANSWER_MAX_BYTES
        if over <= 0:
            return marker
        head = head[: max(len(head) - over, 0)]


# --- choosing and weighing ------------------------------------------------------------------------------------


def pick_report(reports: list[ScanReport]) -> tuple[ScanReport, str | None]:
    """One item out of those an answer listed for one ID, and a note when they disagreed.

    The item with the latest of its own timestamps wins, then the most advanced: a FAILED whose times all lie
    before those of an IN-PROGRESS beside it is a stale leftover (an earlier attempt), and must not finalise the
    scan; between two finals the later end wins. Items without timestamps are ranked by the lifecycle alone.
    """
    chosen = max(reports, key=_pick_key)
    facts = {(r.status, r.submitted_at, r.started_at, r.ended_at, r.error_message) for r in reports}
    if len(facts) == 1:
        return chosen, None
    listed = ", ".join(_shown_status(report) for report in reports[:5])
    more = f" and {len(reports) - 5} more" if len(reports) > 5 else ""
    return chosen, f"ID listed {len(reports)} times ({listed}{more}); kept {_shown_status(chosen)}, the latest"


def _pick_key(report: ScanReport) -> tuple[datetime, int]:
    times = [getattr(report, name) for name in TIMESTAMP_FIELDS if getattr(report, name) is not None]
    return max(times, default=_EARLIEST), LIFECYCLE_RANK.get(report.status, 0)


def _shown_status(report: ScanReport) -> str:
    return cut(report.raw_status.strip(), 40) or "no status"


def _lifecycle_check(scan: Scan, report: ScanReport) -> tuple[bool, bool, str | None]:
    """(applies, is a resubmission, note): whether the answer may change the scan's state, and why not."""
    if not report.raw_status.strip():
        return True, False, None  # no status sent: nothing to order, the other fields merge as usual
    current, incoming = scan.status, report.status
    current_rank, incoming_rank = LIFECYCLE_RANK.get(current, 0), LIFECYCLE_RANK.get(incoming, 0)
    if incoming == Scan.Status.UNKNOWN and current_rank > 0:
        return False, False, f'ignored unrecognised status "{_shown_status(report)}"; kept {current}'
    backwards = incoming_rank < current_rank or (scan.is_final and incoming != current)
    if not backwards:
        return True, False, None
    if scan.submitted_at and report.submitted_at and report.submitted_at > scan.submitted_at:
        when = f"{report.submitted_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return True, True, f"resubmitted at {when}: applied {incoming} after {current}"
    return False, False, f"ignored {incoming} after {current}: a step backwards without a new submission"


def _merged_values(scan: Scan, report: ScanReport, *, resubmitted: bool) -> dict[str, object]:
    """The answer fields after this answer: a blank never replaces a known value, except the error.

    The error shown is the current answer's ("-", empty or null clear it). A resubmission starts the scan's
    times afresh, so its own (even blank) times replace the old attempt's.
    """
    values: dict[str, object] = {}
    if report.raw_status.strip():
        values["status"] = report.status
        values["raw_status"] = report.raw_status
    elif scan.status in (Scan.Status.NOT_FOUND, Scan.Status.NEW):
        # Listed, if without a status: no longer "not found", nor "not checked yet"; what it is, nobody said.
        values["status"] = Scan.Status.UNKNOWN
    for name in TIMESTAMP_FIELDS:
        new = getattr(report, name)
        values[name] = new if new is not None or resubmitted else getattr(scan, name)
    values["error_message"] = report.error_message.strip()
    values["data_source"] = report.data_source or scan.data_source
    values["object_path"] = report.object_path or scan.object_path
    values["last_raw_answer"] = report.raw
    return values
