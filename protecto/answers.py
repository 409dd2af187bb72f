"""Reading what Protecto answers: the envelope, both Status answer shapes, statuses, timestamps, Retry-After.

Pure functions over decoded JSON (and one header value): no HTTP, no Django. Every quirk handled here is listed,
with its reason, in docs/protecto-api.md.
"""

from __future__ import annotations

import email.utils
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from protecto.errors import ProtectoBadAnswer, one_line

CANONICAL_STATUSES = ("PENDING", "IN-PROGRESS", "SUCCESS", "FAILED")
UNKNOWN = "UNKNOWN"

# Protecto's spellings of "no value" in timestamp and error fields (null is handled beside them).
_NO_VALUE = {"", "-"}
_SEPARATORS = re.compile(r"[\s_]+")
_TRUE_TEXT = {"true", "1", "yes"}
_FALSE_TEXT = {"false", "0", "no"}


@dataclass(frozen=True, slots=True)
class ScanReport:
    """One scan's state as Protecto reported it, normalised."""

    tracking_id: str
    status: str
    raw_status: str
    submitted_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error_message: str
    data_source: str
    object_path: str
    raw: dict


def normalise_status(value: object) -> tuple[str, str]:
    """Return (canonical-or-UNKNOWN, raw text).

    The docs' own examples carry trailing spaces ("PENDING ") and other generations spell IN-PROGRESS with an
    underscore or a space, so the comparison ignores case, outer whitespace and the separator. Anything else is
    UNKNOWN, with the raw text kept verbatim for the operator.
    """
    if value is None or isinstance(value, dict | list):
        raw = "" if value is None else json.dumps(value)
        return UNKNOWN, raw
    raw = str(value)
    candidate = _SEPARATORS.sub("-", raw.strip().upper())
    if candidate in CANONICAL_STATUSES:
        return candidate, raw
    return UNKNOWN, raw


def parse_timestamp(value: object, *, tz: tzinfo = UTC) -> datetime | None:
    """Read a Protecto timestamp into an aware datetime, or None when absent or unreadable.

    Protecto sends "YYYY-MM-DD HH:MM:SS.ffffff" with no zone; such values are read in `tz`. A value that does
    carry an offset keeps it. One bad field must never break a refresh, so anything unparseable is None.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        # fromisoformat accepts much longer inputs than a timestamp; a long value is garbage, not a date.
        if text in _NO_VALUE or len(text) > 40:
            return None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def answer_error_message(payload: object) -> str:
    """The `error.message` text of a decoded answer, or "" when there is none."""
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error")
    if isinstance(error, dict):
        return _text(error.get("message"))
    # Some error bodies carry a bare string, or a top-level "message"/"detail" (proxies, frameworks).
    if isinstance(error, str):
        return error.strip()
    return _text(payload.get("message")) or _text(payload.get("detail"))


def parse_status_answer(payload: object, *, tz: tzinfo = UTC) -> list[ScanReport]:
    """Turn a decoded Data Scan Status answer (2024 or 2025 shape) into ScanReports.

    Raises ProtectoBadAnswer when the answer as a whole is unusable (not an object, `success` false, `data`
    not a list). Single items that are not objects or lack a tracking_id are skipped: one odd item must not
    cost the statuses of the others.
    """
    answer = _check_envelope(payload)
    data = answer.get("data")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        shown = "missing" if data is None else f"a {type(data).__name__}"
        raise ProtectoBadAnswer(f"answer's data was {shown}, not a list of scans")
    reports = []
    for item in data:
        if not isinstance(item, dict):
            continue
        report = _report_from_item(item, tz=tz)
        if report is not None:
            reports.append(report)
    return reports


def parse_submit_answer(payload: object) -> str:
    """Return the tracking ID from a decoded Data Scan Async answer; raise ProtectoBadAnswer if there is none."""
    answer = _check_envelope(payload)
    data = answer.get("data")
    if isinstance(data, list) and data:
        data = data[0]
    tracking_id = _text(data.get("tracking_id")) if isinstance(data, dict) else ""
    if not tracking_id:
        raise ProtectoBadAnswer("answer to the scan request carried no tracking_id")
    return tracking_id


def retry_after_seconds(value: str | None, *, fallback: float, cap: float, now: datetime | None = None) -> float:
    """How long a Retry-After header asks us to wait, capped at `cap`; `fallback` if absent or unreadable.

    Accepts the seconds form (fractions too) and the HTTP-date form.
    """
    if value is None or not value.strip():
        return min(fallback, cap)
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return min(fallback, cap)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        seconds = max(seconds, 0.0)
    if seconds != seconds or seconds < 0:  # NaN or negative: not a usable instruction
        return min(fallback, cap)
    return min(seconds, cap)


# --- internals --------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A stripped string for a scalar answer field; "" for null and for containers."""
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value).strip()


def _error_text(value: object) -> str:
    """Protecto's error_msg, with its "no error" spellings ("-", "", null) turned into ""."""
    text = _text(value)
    return "" if text in _NO_VALUE else text


def _is_success(value: object) -> bool | None:
    """Read the `success` flag, which the docs send as "true"/"false" strings and newer answers as booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT:
            return True
        if text in _FALSE_TEXT:
            return False
    return None


def _check_envelope(payload: object) -> dict:
    """Return the answer as a dict after checking its `success` flag; raise ProtectoBadAnswer otherwise."""
    if not isinstance(payload, dict):
        raise ProtectoBadAnswer(f"answer was a JSON {type(payload).__name__}, not an object")
    if "success" in payload and payload["success"] is not None:
        success = _is_success(payload["success"])
        if success is None:
            raise ProtectoBadAnswer(f"answer had an unrecognised success value: {payload['success']!r:.40}")
        if not success:
            message = answer_error_message(payload) or "no error message given"
            raise ProtectoBadAnswer(f"Protecto reported a failure: {message}")
    return payload


def _object_path(value: object) -> str:
    """Join an input_payload.object_name (a list of path parts, or already a string) with "/"."""
    if isinstance(value, list | tuple):
        return "/".join(_text(part) for part in value if _text(part))
    return _text(value)


def _input_payload(item: dict) -> dict:
    payload = item.get("input_payload")
    # The scan request was sent as a list of one; accept the answer echoing it either way.
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]
    return payload if isinstance(payload, dict) else {}


def _first_present(item: dict, *keys: str) -> object:
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    return None


def _report_from_item(item: dict, *, tz: tzinfo) -> ScanReport | None:
    tracking_id = item.get("tracking_id")
    if isinstance(tracking_id, bool) or not isinstance(tracking_id, str | int):
        return None
    tracking_id = str(tracking_id).strip()
    if not tracking_id:
        return None
    # 2024 answers say "status", 2025 answers "request_status"; whichever is present wins.
    status, raw_status = normalise_status(_first_present(item, "status", "request_status"))
    payload = _input_payload(item)
    return ScanReport(
        tracking_id=tracking_id,
        status=status,
        raw_status=raw_status,
        submitted_at=parse_timestamp(item.get("submitted_at"), tz=tz),
        started_at=parse_timestamp(_first_present(item, "process_started_at", "started_at"), tz=tz),
        ended_at=parse_timestamp(_first_present(item, "process_ended_at", "ended_at"), tz=tz),
        error_message=one_line(_error_text(_first_present(item, "error_msg", "error_message"))),
        data_source=_text(payload.get("data_source_name")),
        object_path=_object_path(payload.get("object_name")),
        raw=item,
    )
