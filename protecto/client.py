"""HTTP client for Protecto's Data Scan APIs.

Speaks the contract in docs/protecto-api.md over a single `requests.Session`: fixed timeouts, bounded retries
with backoff, typed `ScanReport` records out, and `ProtectoError` subclasses for every failure. Nothing here
knows about Django, so the client can be used from a shell, a worker or a test alike.

One request goes through three steps: `_send` puts it on the wire once, `_classify` reads the response into a
decoded answer or an error, and `_put` decides whether a failed attempt is worth another and how long to wait.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, tzinfo
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from protecto.answers import (
    ScanReport,
    answer_error_message,
    parse_status_answer,
    parse_submit_answer,
    retry_after_seconds,
)
from protecto.errors import (
    ProtectoAuthError,
    ProtectoBadAnswer,
    ProtectoError,
    ProtectoUnavailable,
    one_line,
)

logger = logging.getLogger(__name__)

# How much of a body that did not parse is quoted back: enough to recognise it, too little to leak much.
EXCERPT_LIMIT = 80
# Connecting should be quick even when answering is slow, so the connect timeout is capped separately.
CONNECT_TIMEOUT_CAP = 5.0
# Jitter spreads retries from several workers so they do not hit a recovering server in lock-step.
JITTER_FRACTION = 0.1

# requests wraps the socket error deep inside its message; the errno text is the part an operator can use.
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


class _TryAgain(Exception):
    """One attempt failed in a way another attempt may not: carries the error to report if none succeeds.

    Deliberately not a ProtectoError, so it can never escape the retry loop looking like a final failure.
    """

    def __init__(self, error: ProtectoError, *, throttled: bool = False, retry_after: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        # A 429 asks for a specific wait (Retry-After); any other failure waits our own backoff.
        self.throttled = throttled
        self.retry_after = retry_after


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


def _server_message(response: requests.Response, *, quote_body: bool) -> str:
    """Protecto's error message as a ": ..." suffix for our own message, or "" when the answer gives none.

    With `quote_body`, a body without an error message (a proxy's HTML page, say) is quoted in short instead.
    """
    message = answer_error_message(_json_or_none(response))
    if not message and quote_body:
        message = _excerpt(response.text)
    return f": {message}" if message else ""


def _check_limits(*, batch_size: int, max_retries: int, timeout: float) -> None:
    """Refuse client settings that would make it send nothing, or wait forever."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_retries < 0:
        raise ValueError("max_retries must not be negative")
    if timeout <= 0:
        raise ValueError("timeout must be positive")


def _json_or_none(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


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
        _check_limits(batch_size=batch_size, max_retries=max_retries, timeout=timeout)
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
        data = json.dumps(body)
        attempts = self.max_retries + 1
        error: ProtectoError | None = None
        for attempt in range(attempts):
            try:
                return self._classify(self._send(url, data), url)
            except _TryAgain as failed:
                error = failed.error
                if attempt + 1 < attempts:
                    self._pause(failed, what=what, attempt=attempt, attempts=attempts)
        assert error is not None  # the loop runs at least once and only falls through after an error
        if attempts > 1:
            raise type(error)(f"{error} (after {attempts} attempts)", status_code=error.status_code)
        raise error

    def _send(self, url: str, data: str) -> requests.Response:
        """Send one PUT; a transport failure raises _TryAgain, or ProtectoError when no retry can fix it."""
        self.requests_made += 1
        shown_url = _display_url(url)
        try:
            return self._session.put(url, data=data, timeout=self.timeouts)
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = _network_reason(exc)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            # The connection broke while the body was arriving; another attempt may well get it whole.
            reason = f"answer cut off ({type(exc).__name__})"
        except requests.RequestException as exc:
            # Invalid URL, too many redirects, and the like: configuration problems no retry will fix.
            raise self._safe(ProtectoError, f"could not send the request to {shown_url}: {exc}") from None
        raise _TryAgain(self._safe(ProtectoUnavailable, f"Protecto unreachable at {shown_url}: {reason}"))

    def _classify(self, response: requests.Response, url: str) -> Any:
        """Return the decoded answer of a usable response; raise ProtectoError, or _TryAgain if worth retrying."""
        code = response.status_code
        if code in (401, 403):
            detail = _server_message(response, quote_body=False)
            message = f"Protecto refused the token (HTTP {code}){detail}"
            raise self._safe(ProtectoAuthError, message, status_code=code)
        if code == 429 or code >= 500:
            detail = _server_message(response, quote_body=True)
            error = self._safe(ProtectoUnavailable, f"Protecto answered HTTP {code}{detail}", status_code=code)
            raise _TryAgain(error, throttled=code == 429, retry_after=response.headers.get("Retry-After"))
        if code >= 300:
            detail = _server_message(response, quote_body=True)
            message = f"Protecto answered HTTP {code} to {_display_url(url)}{detail}"
            raise self._safe(ProtectoBadAnswer, message, status_code=code)
        try:
            return response.json()
        except ValueError:
            # A body that does not parse may be a proxy's hiccup or a cut-off answer: retry it.
            message = f"answer was not valid JSON: {_excerpt(response.text) or '(empty body)'}"
            raise _TryAgain(self._safe(ProtectoBadAnswer, message, status_code=code)) from None

    def _pause(self, failed: _TryAgain, *, what: str, attempt: int, attempts: int) -> None:
        """Log the failed attempt and wait before the next: what a 429 asks for (capped), else our backoff."""
        if failed.throttled:
            wait = retry_after_seconds(failed.retry_after, fallback=self._delay(attempt), cap=self.max_retry_after)
        else:
            wait = self._delay(attempt)
        logger.warning(
            "Protecto %s failed (attempt %d of %d): %s; retrying in %.2fs",
            what,
            attempt + 1,
            attempts,
            failed.error,
            wait,
        )
        self._sleep(wait)
