"""HTTP client for Protecto's Data Scan APIs.

Speaks the contract in docs/protecto-api.md over a single `requests.Session`: fixed timeouts, bounded retries
with backoff, typed `ScanReport` records out, and `ProtectoError` subclasses for every failure. Nothing here
knows about Django, so the client can be used from a shell, a worker or a test alike.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

logger = logging.getLogger(__name__)

CANONICAL_STATUSES = ("PENDING", "IN-PROGRESS", "SUCCESS", "FAILED")
UNKNOWN = "UNKNOWN"

# Longest operator-facing message; longer text is cut so one bad answer cannot flood a page or a log line.
MESSAGE_LIMIT = 300
# How much of a body that did not parse is quoted back: enough to recognise it, too little to leak much.
EXCERPT_LIMIT = 80
# Connecting should be quick even when answering is slow, so the connect timeout is capped separately.
CONNECT_TIMEOUT_CAP = 5.0
# Jitter spreads retries from several workers so they do not hit a recovering server in lock-step.
JITTER_FRACTION = 0.1

_NO_VALUE = {"", "-"}
_SEPARATORS = re.compile(r"[\s_]+")
_WHITESPACE = re.compile(r"\s+")
# requests wraps the socket error deep inside its message; the errno text is the part an operator can use.
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
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


class ProtectoError(Exception):
    """Base of every failure talking to Protecto; str() is a one-line message safe to show an operator."""

    permanent: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(one_line(message))
        self.status_code = status_code


class ProtectoAuthError(ProtectoError):
    """Protecto refused the token (401/403); retrying cannot help until the token is changed."""

    permanent = True


class ProtectoUnavailable(ProtectoError):
    """Protecto could not be reached or kept failing (connection, timeout, 5xx, 429) after all retries."""


class ProtectoBadAnswer(ProtectoError):
    """Protecto answered, but not with something usable: not JSON, wrong shape, a 4xx or `success` false."""


def one_line(text: str, *, limit: int = MESSAGE_LIMIT) -> str:
    """Collapse whitespace to single spaces and cut the text to `limit` characters."""
    flat = _WHITESPACE.sub(" ", str(text)).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


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


def _answer_error_message(payload: object) -> str:
    """The `error.message` text of an answer, or "" when there is none."""
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error")
    if isinstance(error, dict):
        return _text(error.get("message"))
    # Some error bodies carry a bare string, or a top-level "message"/"detail" (proxies, frameworks).
    if isinstance(error, str):
        return error.strip()
    return _text(payload.get("message")) or _text(payload.get("detail"))


def _check_envelope(payload: object) -> dict:
    """Return the answer as a dict after checking its `success` flag; raise ProtectoBadAnswer otherwise."""
    if not isinstance(payload, dict):
        raise ProtectoBadAnswer(f"answer was a JSON {type(payload).__name__}, not an object")
    if "success" in payload and payload["success"] is not None:
        success = _is_success(payload["success"])
        if success is None:
            raise ProtectoBadAnswer(f"answer had an unrecognised success value: {payload['success']!r:.40}")
        if not success:
            message = _answer_error_message(payload) or "no error message given"
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


def _excerpt(text: str) -> str:
    printable = "".join(char if char.isprintable() else " " for char in text)
    return one_line(printable, limit=EXCERPT_LIMIT)


def _network_reason(exc: requests.RequestException) -> str:
    """A short description of a transport failure, without requests' long nested message."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer before the read timeout"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    match = _ERRNO_TEXT.search(str(exc))
    if match:
        return match.group(1).strip().lower()
    if "RemoteDisconnected" in str(exc) or "Connection aborted" in str(exc):
        return "connection closed without an answer"
    return f"connection failed ({type(exc).__name__})"


def _display_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ProtectoClient:
    """A small client for the Data Scan APIs over one requests.Session.

    Every failure surfaces as a ProtectoError subclass whose message never contains the token.
    `requests_made` counts every HTTP request sent, retries included.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        status_path: str = "/data-scan-status",
        submit_path: str = "/data-scan-async",
        timeout: float = 10.0,
        batch_size: int = 100,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
        tz: tzinfo = UTC,
        session: requests.Session | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.status_path = "/" + status_path.lstrip("/")
        self.submit_path = "/" + submit_path.lstrip("/")
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = max(backoff, 0.0)
        self.max_retry_after = max(max_retry_after, 0.0)
        self.tz = tz
        self.timeouts = (min(timeout, CONNECT_TIMEOUT_CAP), timeout)
        self.requests_made = 0
        self._token = token
        self._own_session = session is None
        self._session = session or requests.Session()
        self._session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )
        self._sleep = time.sleep
        self._random = random.Random()

    def __repr__(self) -> str:
        # Spelled out so the token can never reach a log line through a repr.
        return f"<ProtectoClient {_display_url(self.base_url)}>"

    def __enter__(self) -> ProtectoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections (only when the client created its own session)."""
        if self._own_session:
            self._session.close()

    def batches(self, tracking_ids: Sequence[str]) -> Iterator[list[str]]:
        """Split the IDs into lists of at most batch_size, keeping their order."""
        ids = list(tracking_ids)
        for start in range(0, len(ids), self.batch_size):
            yield ids[start : start + self.batch_size]

    def fetch_status_batch(self, tracking_ids: Sequence[str]) -> list[ScanReport]:
        """Ask for the status of one batch of IDs (one PUT, retried as needed).

        IDs that the answer does not mention are simply absent from the result. Raises ProtectoError subclasses.
        """
        ids = list(tracking_ids)
        if not ids:
            return []
        payload = self._put(self.status_path, ids, what=f"status of {len(ids)} scan(s)")
        try:
            return parse_status_answer(payload, tz=self.tz)
        except ProtectoBadAnswer as exc:
            raise self._safe(ProtectoBadAnswer, str(exc)) from None

    def fetch_statuses(
        self, tracking_ids: Sequence[str]
    ) -> Iterator[tuple[list[str], list[ScanReport] | ProtectoError]]:
        """Fetch every batch, yielding (batch, reports) or (batch, error); one failed batch does not stop the rest.

        After a refused token the remaining batches get the same error without being sent: every one of them
        would be refused the same way, and hammering an auth endpoint can get a tenant locked.
        """
        refused: ProtectoAuthError | None = None
        for batch in self.batches(tracking_ids):
            if refused is not None:
                yield batch, refused
                continue
            outcome: list[ScanReport] | ProtectoError
            try:
                outcome = self.fetch_status_batch(batch)
            except ProtectoAuthError as exc:
                refused = outcome = exc
            except ProtectoError as exc:
                outcome = exc
            # Yield outside the try, so nothing the consumer does while we are suspended is taken for our error.
            yield batch, outcome

    def submit_scan(
        self, *, data_source_name: str, object_name: list[str], data_samples: list[dict] | None = None
    ) -> str:
        """Start a data scan (Data Scan Async) and return its tracking ID."""
        body = [
            {
                "data_source_name": data_source_name,
                "object_name": list(object_name),
                "data_samples": list(data_samples or []),
            }
        ]
        payload = self._put(self.submit_path, body, what="scan request")
        try:
            return parse_submit_answer(payload)
        except ProtectoBadAnswer as exc:
            raise self._safe(ProtectoBadAnswer, str(exc)) from None

    # --- internals ----------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, "***")
        return text

    def _safe(self, cls: type[ProtectoError], message: str, *, status_code: int | None = None) -> ProtectoError:
        # Redact before cutting, so a cut can never leave a readable prefix of the token behind.
        return cls(self._redact(one_line(self._redact(message), limit=10_000)), status_code=status_code)

    def _delay(self, attempt: int) -> float:
        base = self.backoff * (2**attempt)
        return base * (1 + self._random.uniform(0, JITTER_FRACTION))

    def _put(self, path: str, body: object, *, what: str) -> Any:
        """PUT a JSON body and return the decoded answer, retrying transient failures."""
        url = self.base_url + path
        shown_url = _display_url(url)
        data = json.dumps(body)
        attempts = self.max_retries + 1
        error: ProtectoError | None = None
        for attempt in range(attempts):
            delay: float | None = None
            self.requests_made += 1
            try:
                response = self._session.put(url, data=data, timeout=self.timeouts)
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = self._safe(
                    ProtectoUnavailable, f"Protecto unreachable at {shown_url}: {_network_reason(exc)}"
                )
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
                # The connection broke while the body was arriving; another attempt may well get it whole.
                reason = f"answer cut off ({type(exc).__name__})"
                error = self._safe(ProtectoUnavailable, f"Protecto unreachable at {shown_url}: {reason}")
            except requests.RequestException as exc:
                # Invalid URL, too many redirects, and the like: configuration problems no retry will fix.
                raise self._safe(ProtectoError, f"could not send the request to {shown_url}: {exc}") from None
            else:
                code = response.status_code
                if code in (401, 403):
                    message = _answer_error_message(self._json_or_none(response))
                    detail = f": {message}" if message else ""
                    raise self._safe(
                        ProtectoAuthError, f"Protecto refused the token (HTTP {code}){detail}", status_code=code
                    )
                if code == 429 or code >= 500:
                    message = _answer_error_message(self._json_or_none(response)) or _excerpt(response.text)
                    detail = f": {message}" if message else ""
                    error = self._safe(
                        ProtectoUnavailable, f"Protecto answered HTTP {code}{detail}", status_code=code
                    )
                    if code == 429:
                        delay = retry_after_seconds(
                            response.headers.get("Retry-After"),
                            fallback=self._delay(attempt),
                            cap=self.max_retry_after,
                        )
                elif code >= 300:
                    message = _answer_error_message(self._json_or_none(response)) or _excerpt(response.text)
                    detail = f": {message}" if message else ""
                    raise self._safe(
                        ProtectoBadAnswer,
                        f"Protecto answered HTTP {code} to {shown_url}{detail}",
                        status_code=code,
                    )
                else:
                    try:
                        return response.json()
                    except ValueError:
                        # A body that does not parse may be a proxy's hiccup or a cut-off answer: retry it.
                        error = self._safe(
                            ProtectoBadAnswer,
                            f"answer was not valid JSON: {_excerpt(response.text) or '(empty body)'}",
                            status_code=code,
                        )
            if attempt + 1 < attempts:
                wait = self._delay(attempt) if delay is None else delay
                logger.warning(
                    "Protecto %s failed (attempt %d of %d): %s; retrying in %.2fs",
                    what,
                    attempt + 1,
                    attempts,
                    error,
                    wait,
                )
                self._sleep(wait)
        assert error is not None  # the loop runs at least once and only falls through after an error
        if attempts > 1:
            raise type(error)(f"{error} (after {attempts} attempts)", status_code=error.status_code)
        raise error

    @staticmethod
    def _json_or_none(response: requests.Response) -> object:
        try:
            return response.json()
        except ValueError:
            return None
