"""HTTP client for Protecto's Data Scan APIs.

Speaks the contract in docs/protecto-api.md over a single `requests.Session`: fixed timeouts, bounded retries
with backoff, typed `ScanReport` records out, and `ProtectoError` subclasses for every failure. Nothing here
knows about Django, so the client can be used from a shell, a worker or a test alike.

One request goes through three steps: `_send` puts it on the wire once, bounded by a whole-attempt deadline and
an answer size limit (protecto.transport), `_classify` reads the answer into a decoded payload or an error, and
`_put` decides whether a failed attempt is worth another and how long to wait, within a total time the caller
can learn in advance from `worst_case_seconds()`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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
from protecto.transport import AnswerTooLarge, Deadline, DeadlinePassed, bounded_adapter, read_capped

logger = logging.getLogger(__name__)

# How much of a body that did not parse is quoted back: enough to recognise it, too little to leak much.
EXCERPT_LIMIT = 80
# Connecting should be quick even when answering is slow, so the connect timeout is capped separately.
CONNECT_TIMEOUT_CAP = 5.0
# Jitter spreads retries from several workers so they do not hit a recovering server in lock-step.
JITTER_FRACTION = 0.1
# Allowed per attempt beyond its deadline in worst_case_seconds(): noticing the deadline, closing the connection
# and decoding the answer that did arrive in time.
ATTEMPT_OVERHEAD = 0.5
# The longest host name a redirect error quotes: it comes from the server, so it is bounded like any excerpt.
HOST_LIMIT = 100

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
    if "Read timed out" in str(exc):
        # A read timeout while the body streams in reaches us wrapped in a ConnectionError.
        return "no answer before the read timeout"
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


def _size_text(size: int) -> str:
    """A byte count as an operator reads it: 20000000 -> "20 MB"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def _redirect_target(location: str | None) -> str:
    """Where a redirect points, as host[:port] only: its path and query may carry anything, secrets included."""
    if not location or not location.strip():
        return "without a Location"
    parts = urlsplit(location.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname:
        return "to another path on the same host"
    host = parts.hostname if port is None else f"{parts.hostname}:{port}"
    return f"to {_excerpt(host)[:HOST_LIMIT]}"


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer, read whole (within the size limit) before the connection went back to the pool."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes | bytearray

    def text(self) -> str:
        return bytes(self.body).decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The decoded JSON body; ValueError when it is not JSON."""
        return json.loads(self.body)

    def json_or_none(self) -> object:
        try:
            return self.json()
        except ValueError:
            return None

    def server_message(self, *, quote_body: bool) -> str:
        """Protecto's error message as a ": ..." suffix for our own message, or "" when the answer gives none.

        With `quote_body`, a body without an error message (a proxy's HTML page, say) is quoted in short instead.
        """
        message = answer_error_message(self.json_or_none())
        if not message and quote_body:
            message = _excerpt(self.text())
        return f": {message}" if message else ""


def _check_limits(
    *, batch_size: int, max_retries: int, timeout: float, deadline: float, max_answer_bytes: int
) -> None:
    """Refuse client settings that would make it send nothing, or wait forever."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_retries < 0:
        raise ValueError("max_retries must not be negative")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if not 0 < deadline < float("inf"):
        raise ValueError("deadline must be a positive number of seconds")
    if max_answer_bytes < 1:
        raise ValueError("max_answer_bytes must be at least 1")


class ProtectoClient:
    """A small client for the Data Scan APIs over one requests.Session.

    Every failure surfaces as a ProtectoError subclass whose message never contains the token.
    `requests_made` counts every HTTP request sent, retries included.

    Bounds: `timeout` is the read timeout of one socket read (connect: at most 5 s); `deadline` is the whole of
    one attempt (connect, send and every byte of the answer); `max_answer_bytes` caps an answer's size; one call
    with all its retries and waits never takes longer than `worst_case_seconds()`. Redirects are never followed.
    The client mounts its own adapter on the session (given or not) to enforce the deadline.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        status_path: str = "/data-scan-status",
        submit_path: str = "/data-scan-async",
        timeout: float = 10.0,
        deadline: float = 30.0,
        max_answer_bytes: int = 20_000_000,
        batch_size: int = 100,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
        tz: tzinfo = UTC,
        session: requests.Session | None = None,
    ) -> None:
        _check_limits(
            batch_size=batch_size,
            max_retries=max_retries,
            timeout=timeout,
            deadline=deadline,
            max_answer_bytes=max_answer_bytes,
        )
        self.base_url = base_url.rstrip("/")
        self.status_path = "/" + status_path.lstrip("/")
        self.submit_path = "/" + submit_path.lstrip("/")
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = max(backoff, 0.0)
        self.max_retry_after = max(max_retry_after, 0.0)
        self.tz = tz
        self.timeouts = (min(timeout, CONNECT_TIMEOUT_CAP), timeout)
        self.deadline = float(deadline)
        self.max_answer_bytes = max_answer_bytes
        self.requests_made = 0
        self._token = token
        self._own_session = session is None
        self._session = session or requests.Session()
        adapter = bounded_adapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
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

    def worst_case_seconds(self) -> float:
        """The longest one call (`fetch_status_batch`, `submit_scan`) can take: every attempt, wait and retry.

        Each attempt gets at most `deadline` (plus a small allowance to unwind), each wait between attempts at
        most the longest backoff; a Retry-After wait is only honoured while another whole attempt still fits,
        otherwise the call gives up at once. DNS lookups, which no socket timeout covers, are the one exception.
        """
        waits = sum(self._backoff(attempt, jitter=JITTER_FRACTION) for attempt in range(self.max_retries))
        return (self.max_retries + 1) * (self.deadline + ATTEMPT_OVERHEAD) + waits

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

    def _backoff(self, attempt: int, *, jitter: float | None = None) -> float:
        """Our own wait before retry number `attempt + 1`; `jitter` defaults to a random draw (max: the bound)."""
        if jitter is None:
            jitter = self._random.uniform(0, JITTER_FRACTION)
        # Capped like a Retry-After, so a long run of retries cannot double its way past any sane bound.
        return min(self.backoff * (2**attempt) * (1 + jitter), self.max_retry_after)

    def _put(self, path: str, body: object, *, what: str) -> Any:
        """PUT a JSON body and return the decoded answer, retrying transient failures within the call's limit."""
        url = self.base_url + path
        data = json.dumps(body)
        limit = self.worst_case_seconds()
        ends = time.monotonic() + limit
        attempts = self.max_retries + 1
        made = 0
        error: ProtectoError | None = None
        note = ""
        while made < attempts:
            made += 1
            seconds = max(min(self.deadline, ends - time.monotonic()), 0.01)
            try:
                return self._classify(self._send(url, data, seconds=seconds), url)
            except _TryAgain as failed:
                error = failed.error
                if made == attempts:
                    break
                wait = self._wait(failed, attempt=made - 1)
                # Another attempt needs its wait plus a whole deadline; never start one the limit cannot hold.
                if time.monotonic() + wait + self.deadline > ends:
                    note = f"; another would not fit in this call's {limit:.3g} s limit"
                    break
                self._log_retry(failed, what=what, made=made, attempts=attempts, wait=wait)
                self._sleep(wait)
        assert error is not None  # the loop runs at least once and only falls through after an error
        if made > 1 or note:
            plural = "s" if made > 1 else ""
            message = f"{error} (after {made} attempt{plural}{note})"
            raise type(error)(message, status_code=error.status_code)
        raise error

    def _send(self, url: str, data: str, *, seconds: float) -> _Answer:
        """One PUT within `seconds`; a transport failure raises _TryAgain, or ProtectoError if no retry helps."""
        self.requests_made += 1
        shown_url = _display_url(url)
        with Deadline(seconds) as deadline:
            try:
                return self._exchange(url, data, deadline)
            except AnswerTooLarge as exc:
                # Not retried: the same request would get the same answer.
                limit = _size_text(self.max_answer_bytes)
                message = f"answer larger than {limit} refused (HTTP {exc.status_code})"
                raise self._safe(ProtectoBadAnswer, message, status_code=exc.status_code) from None
            except (
                requests.ConnectionError,
                requests.Timeout,
                # The connection broke while the body was arriving; another attempt may well get it whole.
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
                DeadlinePassed,
            ) as exc:
                if deadline.expired:
                    reason = f"no complete answer within the {seconds:.3g} s deadline"
                elif isinstance(exc, requests.ConnectionError | requests.Timeout):
                    reason = _network_reason(exc)
                else:
                    reason = f"answer cut off ({type(exc).__name__})"
            except requests.RequestException as exc:
                # Invalid URL and the like: configuration problems no retry will fix.
                raise self._safe(ProtectoError, f"could not send the request to {shown_url}: {exc}") from None
        raise _TryAgain(self._safe(ProtectoUnavailable, f"Protecto unreachable at {shown_url}: {reason}"))

    def _exchange(self, url: str, data: str, deadline: Deadline) -> _Answer:
        """Send the PUT and read its answer, streamed and capped; the connection is released either way."""
        response = self._session.put(
            url,
            data=data,
            timeout=deadline.timeouts(*self.timeouts),
            stream=True,
            # A redirect may lead anywhere; its answer would be trusted and the request re-sent there.
            allow_redirects=False,
        )
        with response:
            if 300 <= response.status_code < 400:
                return _Answer(response.status_code, response.headers, b"")  # its body is of no use to us
            body = read_capped(response, limit=self.max_answer_bytes, deadline=deadline)
        return _Answer(response.status_code, response.headers, body)

    def _classify(self, answer: _Answer, url: str) -> Any:
        """Return the decoded payload of a usable answer; raise ProtectoError, or _TryAgain if worth retrying."""
        code = answer.status_code
        if code in (401, 403):
            detail = answer.server_message(quote_body=False)
            message = f"Protecto refused the token (HTTP {code}){detail}"
            raise self._safe(ProtectoAuthError, message, status_code=code)
        if code == 429 or code >= 500:
            detail = answer.server_message(quote_body=True)
            error = self._safe(ProtectoUnavailable, f"Protecto answered HTTP {code}{detail}", status_code=code)
            raise _TryAgain(error, throttled=code == 429, retry_after=answer.headers.get("Retry-After"))
        if 300 <= code < 400:
            # Only the host: the rest of the Location is the server's to fill, and it is not followed anyway.
            target = _redirect_target(answer.headers.get("Location"))
            message = f"Protecto answered HTTP {code}, a redirect {target}; redirects are not followed"
            raise self._safe(ProtectoBadAnswer, message, status_code=code)
        if code >= 300:
            detail = answer.server_message(quote_body=True)
            message = f"Protecto answered HTTP {code} to {_display_url(url)}{detail}"
            raise self._safe(ProtectoBadAnswer, message, status_code=code)
        try:
            # The token is taken out of everything the API says before anyone reads it (an echo of our own
            # Authorization header must not end up stored, shown or mailed).
            return _without_token(answer.json(), self._token)
        except ValueError:
            # A body that does not parse may be a proxy's hiccup or a cut-off answer: retry it.
            message = f"answer was not valid JSON: {_excerpt(answer.text()) or '(empty body)'}"
            raise _TryAgain(self._safe(ProtectoBadAnswer, message, status_code=code)) from None

    def _wait(self, failed: _TryAgain, *, attempt: int) -> float:
        """How long to wait before the next attempt: what a 429 asks for (capped), else our backoff."""
        backoff = self._backoff(attempt)
        if failed.throttled:
            return retry_after_seconds(failed.retry_after, fallback=backoff, cap=self.max_retry_after)
        return backoff

    def _log_retry(self, failed: _TryAgain, *, what: str, made: int, attempts: int, wait: float) -> None:
        logger.warning(
            "Protecto %s failed (attempt %d of %d): %s; retrying in %.2fs",
            what,
            made,
            attempts,
            failed.error,
            wait,
        )


def _without_token(value: Any, token: str) -> Any:
    """A decoded JSON value with every occurrence of the token in its strings (keys included) replaced by ***."""
    if not token:
        return value
    if isinstance(value, str):
        return value.replace(token, "***")
    if isinstance(value, list):
        return [_without_token(item, token) for item in value]
    if isinstance(value, dict):
        return {_without_token(key, token): _without_token(item, token) for key, item in value.items()}
    return value
