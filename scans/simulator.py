"""A stand-in for Protecto's Data Scan APIs, served over real HTTP.

The real API is out of reach from this project, so the demo and the tests talk to this simulator instead. It
speaks the contract in docs/protecto-api.md, quirks included: statuses with trailing spaces, "-" for unset
timestamps and errors, `success` as a string in the 2024 shape and a boolean in the 2025 shape. Scans move
PENDING -> IN-PROGRESS -> SUCCESS/FAILED on a clock, so statuses change by themselves between polls.

Faults (500, 429 with Retry-After, invalid JSON, hangs, dropped connections) can be drawn at random rates or
queued deterministically with `fail_next()`, and everything can be steered in-process or over the `/_sim/`
control endpoints. Standard library only; nothing Django.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import json
import math
import random
import re
import socket
import sys
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

PENDING = "PENDING"
IN_PROGRESS = "IN-PROGRESS"
SUCCESS = "SUCCESS"
FAILED = "FAILED"
_KNOWN_STATUSES = (PENDING, IN_PROGRESS, SUCCESS, FAILED)

# Failure reasons in the style a scanning service reports them: data source, permissions, schema, quota.
# {source} and {object} are filled from the scan, so a FAILED scan's message names its own data source.
FAILURE_MESSAGES = (
    "Connection to data source '{source}' timed out after 300s",
    "Permission denied reading object {object}",
    "Schema changed during scan: column 'email' no longer exists",
    "Quota exceeded for tenant: 500000 samples per day",
    "Data source '{source}' answered HTTP 503 while listing objects",
    "Sampling failed: column 'phone' is empty in all 1000 sampled rows",
)
_DATA_SOURCES = ("salesforce", "snowflake", "postgres", "s3", "bigquery")
_OBJECTS = (
    ["CustomerDB", "Marketingschema", "Customerstable"],
    ["SalesDB", "public", "orders"],
    ["HR", "employees"],
    ["warehouse", "events", "2025"],
)

# Kinds accepted by fail_next(). "401-echo" and "success-false" exist only as queued faults: they model a
# misbehaving server that echoes the presented token, and a refusal sent as HTTP 200 with success "false".
FAULT_KINDS = ("500", "429", "malformed", "hang", "drop", "401-echo", "success-false")

# The contract: letters, digits, '-' and '_', up to 128 characters. Other IDs are never reported.
_TRACKING_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_BODY_BYTES = 1_000_000
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_INVALID_TOKEN = "Invalid or expired token"

Clock = Callable[[], datetime]


class _Unset(enum.Enum):
    # Tells "argument left out" (use now) apart from an explicit None (the answer has no submission time).
    UNSET = "unset"


_UNSET = _Unset.UNSET


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SimulatorConfig:
    """How the simulator behaves; every field can be changed live with `ProtectoSimulator.configure()`."""

    token: str = "simulator-token"
    shape: str = "2024"
    status_paths: tuple[str, ...] = ("/data-scan-status", "/data-scan/status")
    submit_paths: tuple[str, ...] = ("/data-scan-async", "/data-scan/data-scan-async")
    latency: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1
    malformed_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    pending_seconds: tuple[float, float] = (5.0, 40.0)
    running_seconds: tuple[float, float] = (10.0, 90.0)
    failure_rate: float = 0.25
    accept_unknown_ids: bool = True
    seed: int | None = None
    trailing_space_rate: float = 0.3
    quiet: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        if not isinstance(self.token, str) or not self.token.strip():
            raise ValueError("token must be a non-empty string")
        if self.shape not in ("2024", "2025"):
            raise ValueError(f"shape must be '2024' or '2025', not {self.shape!r}")
        for name in ("status_paths", "submit_paths"):
            paths = getattr(self, name)
            if not paths or not all(isinstance(path, str) and path.startswith("/") for path in paths):
                raise ValueError(f"{name} must be a non-empty list of paths starting with '/'")
        for name in ("error_rate", "rate_limit_rate", "malformed_rate", "hang_rate", "failure_rate"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1, not {value!r}")
        if not _is_number(self.trailing_space_rate) or not 0 <= self.trailing_space_rate <= 1:
            raise ValueError(f"trailing_space_rate must be between 0 and 1, not {self.trailing_space_rate!r}")
        for name in ("latency", "hang_seconds", "retry_after"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds, at least 0, not {value!r}")
        for name in ("pending_seconds", "running_seconds"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(_is_number(part) for part in value)
                or not 0 <= value[0] <= value[1]
            ):
                raise ValueError(f"{name} must be (min, max) seconds with 0 <= min <= max, not {value!r}")
        for name in ("accept_unknown_ids", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be a whole number or null, not {self.seed!r}")

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data, without the token."""
        data = dataclasses.asdict(self)
        del data["token"]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


_CONFIG_FIELDS = {item.name for item in dataclasses.fields(SimulatorConfig)}
_TUPLE_FIELDS = {"status_paths", "submit_paths", "pending_seconds", "running_seconds"}


def _coerce_setting(name: str, value: Any) -> Any:
    """Accept JSON-friendly spellings (lists for tuples, 2024 as a number) for config changes."""
    if name in _TUPLE_FIELDS and isinstance(value, list):
        return tuple(value)
    if name == "shape" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@dataclass
class SimulatedScan:
    """One scan the simulator knows about: either following a time plan, or pinned in an explicit state."""

    tracking_id: str
    submitted_at: datetime | None
    data_source: str
    object_name: list[str]
    data_samples: list[Any]
    outcome: str = SUCCESS
    error_msg: str = ""
    # A plan: seconds spent PENDING, then IN-PROGRESS. None means the scan is pinned.
    pending_for: float | None = None
    running_for: float | None = None
    pinned_status: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    trailing_space: bool = False

    def state_at(self, now: datetime) -> tuple[str, datetime | None, datetime | None, str]:
        """(status, started_at, ended_at, error_msg) as they are at `now`."""
        if (
            self.pinned_status is not None
            or self.pending_for is None
            or self.running_for is None
            or self.submitted_at is None
        ):
            return self.pinned_status or PENDING, self.started_at, self.ended_at, self.error_msg
        started = self.submitted_at + timedelta(seconds=self.pending_for)
        if now < started:
            return PENDING, None, None, ""
        ended = started + timedelta(seconds=self.running_for)
        if now < ended:
            return IN_PROGRESS, started, None, ""
        return self.outcome, started, ended, self.error_msg if self.outcome == FAILED else ""


@dataclass
class _Reply:
    code: int = 200
    payload: Any = None
    text: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    batch: int | None = None
    note: str = ""

    def body(self) -> bytes:
        text = self.text if self.text is not None else json.dumps(self.payload)
        return text.encode("utf-8")


def _error_body(message: str) -> dict[str, Any]:
    return {"data": None, "success": "false", "error": {"message": message}}


def _format_time(value: datetime | None) -> str | None:
    # Protecto's timestamps carry no zone; the simulator always writes UTC.
    return value.astimezone(UTC).strftime(_TIMESTAMP_FORMAT) if value is not None else None


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _drop_first_comma(text: str) -> str:
    """Reproduce the docs' sample answer, which lacks the comma after the data value."""
    for marker in ('], "success"', '}, "success"', 'null, "success"'):
        if marker in text:
            return text.replace(marker, marker.replace(",", ""), 1)
    return text[: max(len(text) // 2, 1)]


class ProtectoSimulator:
    """A thread-safe, in-process Protecto simulator; start() serves it on a real port in a daemon thread."""

    def __init__(self, config: SimulatorConfig | None = None, *, clock: Clock | None = None) -> None:
        config = config or SimulatorConfig()
        config.validate()
        self._config = config
        self._clock = clock or _utc_now
        self._lock = threading.RLock()
        self._rng = random.Random(config.seed)
        self._scans: dict[str, SimulatedScan] = {}
        self._forced: deque[str] = deque()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._status_requests: list[list[str]] = []
        self._submit_requests: list[list[dict[str, Any]]] = []
        self._request_count = 0
        self._last_authorization_ok: bool | None = None
        self._last_request_headers: dict[str, str] = {}

    # --- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> ProtectoSimulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self, host: str, port: int) -> _Server:
        if self._server is not None:
            raise RuntimeError("the simulator is already serving")
        self._stopping.clear()
        self._server = _Server((host, port), self)
        return self._server

    def start(self, host: str = "127.0.0.1", port: int = 0) -> ProtectoSimulator:
        """Serve in a daemon thread (port 0 picks a free port; see .url) and return self."""
        server = self._bind(host, port)
        # A short poll interval keeps stop() quick, which matters when every test starts its own simulator.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="protecto-simulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(
        self, host: str = "127.0.0.1", port: int = 8765, *, on_ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve in the calling thread until stop() is called from elsewhere or KeyboardInterrupt."""
        server = self._bind(host, port)
        try:
            if on_ready is not None:
                on_ready(self.url)
            server.serve_forever(poll_interval=0.2)
        finally:
            self._stopping.set()
            server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop serving; answers still waiting out a latency or a hang are dropped."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join(timeout=5)
            server.server_close()
            self._server = None
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL being served, e.g. http://127.0.0.1:41234."""
        if self._server is None:
            raise RuntimeError("the simulator is not serving; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- configuration and deterministic faults -----------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        """The current settings (replaced as a whole by configure(), so safe to read)."""
        return self._config

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Change settings live, e.g. configure(error_rate=1.0); an invalid change raises ValueError."""
        unknown = sorted(set(changes) - _CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(unknown)}")
        coerced = {name: _coerce_setting(name, value) for name, value in changes.items()}
        with self._lock:
            new = dataclasses.replace(self._config, **coerced)
            new.validate()
            self._config = new
            if "seed" in changes:
                self._rng = random.Random(new.seed)
        return new

    def fail_next(self, count: int = 1, kind: str = "500") -> None:
        """Make the next `count` API calls (status or submit) fail as `kind`, before any random faults.

        Kinds: "500", "429" (with the configured Retry-After), "malformed" (invalid JSON), "hang" (wait
        hang_seconds, then answer normally), "drop" (close the connection without answering), "401-echo" (401
        whose message quotes the presented token) and "success-false" (HTTP 200 with success "false").
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a whole number, at least 0, not {count!r}")
        with self._lock:
            self._forced.extend([kind] * count)

    def clear_faults(self) -> None:
        """Forget queued fail_next() faults."""
        with self._lock:
            self._forced.clear()

    # --- scans ----------------------------------------------------------------------------------------------

    def _draw_plan(self, config: SimulatorConfig) -> tuple[float, float]:
        return self._rng.uniform(*config.pending_seconds), self._rng.uniform(*config.running_seconds)

    def _draw_error(self, scan: SimulatedScan) -> str:
        template = self._rng.choice(FAILURE_MESSAGES)
        return template.format(source=scan.data_source, object="/".join(scan.object_name))

    def _draw_outcome(self, config: SimulatorConfig) -> str:
        return FAILED if self._rng.random() < config.failure_rate else SUCCESS

    def add_scan(
        self,
        tracking_id: str,
        *,
        status: str | None = None,
        submitted_at: datetime | _Unset | None = _UNSET,
        started_at: datetime | None = None,
        ended_at: datetime | None = None,
        error_msg: str | None = None,
        data_source: str = "salesforce",
        object_name: Sequence[str] | str = ("CustomerDB", "Customerstable"),
        data_samples: list[dict[str, Any]] | None = None,
        pending_seconds: float | None = None,
        running_seconds: float | None = None,
        outcome: str | None = None,
    ) -> str:
        """Add (or replace) a scan and return its ID.

        With `status` and no plan the scan is pinned: it is served with exactly that status text (any text,
        "PENDING " or "QUEUED" included) until set_status() changes it; missing timestamps are filled in
        sensibly. Without `status`, or with pending_seconds/running_seconds, it follows a plan: unspecified
        durations and the outcome are drawn from the config, and a given `status` back-dates submitted_at so
        the scan enters that phase now. Leaving submitted_at out means now; passing None pins a scan whose
        answers carry no submission time at all ("-" or null).
        """
        if not isinstance(tracking_id, str) or not _TRACKING_ID.fullmatch(tracking_id):
            raise ValueError(f"tracking_id must be 1-128 letters, digits, '-' or '_', not {tracking_id!r}")
        if outcome is not None and outcome not in (SUCCESS, FAILED):
            raise ValueError(f"outcome must be SUCCESS or FAILED, not {outcome!r}")
        planned = status is None or pending_seconds is not None or running_seconds is not None
        names = [object_name] if isinstance(object_name, str) else list(object_name)
        given_submitted = None if isinstance(submitted_at, _Unset) else _aware(submitted_at)
        started_at, ended_at = _aware(started_at), _aware(ended_at)
        with self._lock:
            config = self._config
            now = self._clock()
            keep_blank = submitted_at is None and not planned
            scan = SimulatedScan(
                tracking_id=tracking_id,
                submitted_at=None if keep_blank else given_submitted or now,
                data_source=data_source,
                object_name=names,
                data_samples=list(data_samples or []),
            )
            canonical = status.strip().upper() if status is not None else None
            if planned:
                if started_at is not None or ended_at is not None:
                    raise ValueError("started_at and ended_at apply to pinned scans; a planned scan computes them")
                if canonical is not None and canonical not in _KNOWN_STATUSES:
                    raise ValueError(f"a planned scan can only start as one of {', '.join(_KNOWN_STATUSES)}")
                drawn_pending, drawn_running = self._draw_plan(config)
                scan.pending_for = drawn_pending if pending_seconds is None else float(pending_seconds)
                scan.running_for = drawn_running if running_seconds is None else float(running_seconds)
                if canonical in (SUCCESS, FAILED):
                    outcome = canonical
                scan.outcome = outcome or self._draw_outcome(config)
                if given_submitted is None and canonical is not None:
                    back = {PENDING: 0.0, IN_PROGRESS: scan.pending_for}.get(
                        canonical, scan.pending_for + scan.running_for
                    )
                    scan.submitted_at = now - timedelta(seconds=back)
                scan.trailing_space = self._rng.random() < config.trailing_space_rate
            else:
                scan.pinned_status = status
                if canonical in (IN_PROGRESS, SUCCESS, FAILED):
                    started_at = started_at or max(scan.submitted_at or now, now)
                if canonical in (SUCCESS, FAILED):
                    ended_at = ended_at or max(started_at or now, now)
                scan.started_at, scan.ended_at = started_at, ended_at
            if error_msg is None:
                failing = canonical == FAILED or (planned and scan.outcome == FAILED)
                error_msg = self._draw_error(scan) if failing else ""
            scan.error_msg = error_msg
            self._scans[tracking_id] = scan
        return tracking_id

    def set_status(self, tracking_id: str, status: str, error_msg: str | None = None) -> None:
        """Force a scan into `status` now and pin it there, setting started/ended timestamps to match."""
        with self._lock:
            scan = self._scans.get(tracking_id)
            if scan is None:
                raise KeyError(f"the simulator has no scan {tracking_id!r}")
            now = self._clock()
            _, started, ended, _ = scan.state_at(now)
            canonical = status.strip().upper()
            if canonical == PENDING:
                started = ended = None
            elif canonical == IN_PROGRESS:
                started, ended = started or now, None
            elif canonical in (SUCCESS, FAILED):
                started, ended = started or now, now
            if error_msg is None:
                error_msg = self._draw_error(scan) if canonical == FAILED else ""
            scan.pinned_status = status
            scan.pending_for = scan.running_for = None
            scan.started_at, scan.ended_at, scan.error_msg = started, ended, error_msg

    def submit(
        self,
        *,
        data_source_name: str = "salesforce",
        object_name: Sequence[str] | str = ("CustomerDB", "Customerstable"),
        data_samples: list[dict[str, Any]] | None = None,
    ) -> str:
        """Start a scan the way the async endpoint does and return its new tracking ID."""
        with self._lock:
            tracking_id = self._mint_id()
            self.add_scan(
                tracking_id, data_source=data_source_name, object_name=object_name, data_samples=data_samples
            )
        return tracking_id

    def _mint_id(self) -> str:
        while True:
            base = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            if self._config.shape == "2025":
                # The 2025 docs' IDs are a UUID followed by 14 digits, a DDMMYYYYHHMMSS stamp: 50 characters.
                base += self._clock().astimezone(UTC).strftime("%d%m%Y%H%M%S")
            if base not in self._scans:
                return base

    def scan_status(self, tracking_id: str) -> str:
        """The status text a status call would report for this scan right now (for tests)."""
        with self._lock:
            return self._scans[tracking_id].state_at(self._clock())[0]

    def answer_item(self, tracking_id: str) -> dict[str, Any]:
        """The item a status call would carry for this scan right now, in the configured shape."""
        with self._lock:
            return self._render(self._scans[tracking_id], self._config, self._clock())

    def _render(self, scan: SimulatedScan, config: SimulatorConfig, now: datetime) -> dict[str, Any]:
        status, started, ended, error = scan.state_at(now)
        if scan.trailing_space and scan.pinned_status is None:
            status += " "  # as in the docs' own examples
        error_msg = error or "-"
        if config.shape == "2024":
            return {
                "tracking_id": scan.tracking_id,
                "status": status,
                "submitted_at": _format_time(scan.submitted_at) or "-",
                "process_started_at": _format_time(started) or "-",
                "process_ended_at": _format_time(ended) or "-",
                "error_msg": error_msg,
            }
        return {
            "tracking_id": scan.tracking_id,
            "request_status": status,
            "submitted_at": _format_time(scan.submitted_at),
            "process_started_at": _format_time(started),
            "process_ended_at": _format_time(ended),
            "error_msg": error_msg,
            "input_payload": {
                "data_source_name": scan.data_source,
                "object_name": list(scan.object_name),
                "data_samples": list(scan.data_samples),
            },
        }

    def status_answer(self, tracking_ids: Sequence[str]) -> dict[str, Any]:
        """The full answer a status call for these IDs gets (unknown IDs created or left out per config)."""
        with self._lock:
            config = self._config
            now = self._clock()
            items = []
            for tracking_id in dict.fromkeys(tracking_ids):
                scan = self._scans.get(tracking_id)
                if scan is None:
                    if not (config.accept_unknown_ids and _TRACKING_ID.fullmatch(tracking_id)):
                        continue  # "not reported": the contract's answer for an ID the service does not know
                    self.add_scan(
                        tracking_id,
                        data_source=self._rng.choice(_DATA_SOURCES),
                        object_name=self._rng.choice(_OBJECTS),
                    )
                    scan = self._scans[tracking_id]
                items.append(self._render(scan, config, now))
            return self._envelope(items, config)

    @staticmethod
    def _envelope(data: Any, config: SimulatorConfig) -> dict[str, Any]:
        # 2024 docs send success as a string; 2025 answers as a boolean.
        success: str | bool = "true" if config.shape == "2024" else True
        return {"data": data, "success": success, "error": {"message": ""}}

    # --- request log ----------------------------------------------------------------------------------------

    @property
    def status_requests(self) -> list[list[str]]:
        """The ID lists received by authorised status calls, in arrival order (faulted calls included)."""
        with self._lock:
            return [list(ids) for ids in self._status_requests]

    @property
    def submit_requests(self) -> list[list[dict[str, Any]]]:
        """The scan-request lists received by authorised submit calls, in arrival order."""
        with self._lock:
            return [list(requests) for requests in self._submit_requests]

    @property
    def request_count(self) -> int:
        """HTTP requests received outside /_sim/ (refused, faulted and unknown paths included)."""
        with self._lock:
            return self._request_count

    @property
    def last_authorization_ok(self) -> bool | None:
        """Whether the last API call carried the right Bearer token; None before the first call."""
        with self._lock:
            return self._last_authorization_ok

    @property
    def last_request_headers(self) -> dict[str, str]:
        """Headers of the last API call, with the Authorization value masked."""
        with self._lock:
            return dict(self._last_request_headers)

    def reset_log(self) -> None:
        """Forget recorded requests and counts (scans and config are kept)."""
        with self._lock:
            self._status_requests.clear()
            self._submit_requests.clear()
            self._request_count = 0
            self._last_authorization_ok = None
            self._last_request_headers = {}

    def state(self) -> dict[str, Any]:
        """Settings (without the token) and counts, as served by GET /_sim/state."""
        with self._lock:
            now = self._clock()
            by_status = Counter(scan.state_at(now)[0].strip() for scan in self._scans.values())
            return {
                "config": self._config.public_dict(),
                "scans": len(self._scans),
                "by_status": dict(sorted(by_status.items())),
                "request_count": self._request_count,
                "status_requests": len(self._status_requests),
                "submit_requests": len(self._submit_requests),
                "queued_faults": list(self._forced),
            }

    # --- HTTP handling (called from the server's handler threads) ---------------------------------------------

    def _authorised(self, headers: Mapping[str, str], config: SimulatorConfig) -> bool:
        scheme, _, presented = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), config.token.encode())

    def _draw_fault(self, config: SimulatorConfig) -> tuple[str | None, bool]:
        """(answer fault or None, hang?) for one API call: queued faults first, then the configured rates.

        One draw is compared against the 500, 429 and malformed rates in that order, so rates adding up to more
        than 1 simply leave less room for the later kinds.
        """
        if self._forced:
            kind = self._forced.popleft()
            return (None, True) if kind == "hang" else (kind, False)
        hang = config.hang_rate > 0 and self._rng.random() < config.hang_rate
        draw = self._rng.random()
        for kind, rate in (("500", config.error_rate), ("429", config.rate_limit_rate)):
            if draw < rate:
                return kind, hang
            draw -= rate
        if draw < config.malformed_rate:
            return "malformed", hang
        return None, hang

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Work out the reply to one HTTP request; sleeping and writing are left to the HTTP handler."""
        path = urlsplit(raw_path).path
        if path == "/_sim" or path.startswith("/_sim/"):
            return self._handle_control(method, path, headers, body)
        with self._lock:
            self._request_count += 1
            config = self._config
        if path in config.status_paths:
            endpoint = "status"
        elif path in config.submit_paths:
            endpoint = "submit"
        else:
            return _Reply(404, _error_body(f"No such endpoint: {path[:100]}"))
        if method != "PUT":
            return _Reply(405, _error_body(f"{method} is not allowed here; use PUT"), headers={"Allow": "PUT"})
        authorised = self._authorised(headers, config)
        with self._lock:
            self._last_authorization_ok = authorised
            self._last_request_headers = {
                name: ("Bearer ***" if name.lower() == "authorization" else value)
                for name, value in headers.items()
            }
        if not authorised:
            # Never echo the presented token, not even a wrong one: it may be a real secret sent to the wrong host.
            return _Reply(401, _error_body(_INVALID_TOKEN))
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _Reply(400, _error_body("Request body is not valid JSON"))
        if endpoint == "status":
            return self._handle_status(decoded, headers, config)
        return self._handle_submit(decoded, headers, config)

    def _failure(self, kind: str | None, config: SimulatorConfig, headers: Mapping[str, str]) -> _Reply | None:
        """The reply for a fault that replaces the answer, or None when the call is answered (maybe malformed)."""
        if kind == "500":
            return _Reply(500, _error_body("Internal server error (simulated)"), note="500")
        if kind == "429":
            seconds = config.retry_after
            shown = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
            return _Reply(429, _error_body("Too many requests"), headers={"Retry-After": shown}, note="429")
        if kind == "drop":
            return _Reply(drop=True, note="drop")
        if kind == "401-echo":
            _, _, presented = (headers.get("Authorization") or "").partition(" ")
            return _Reply(401, _error_body(f"Token {presented.strip()} is invalid or expired"), note="401-echo")
        if kind == "success-false":
            message = "Data Scan APIs need a paid subscription; this token belongs to a trial tenant"
            return _Reply(200, _error_body(message), note="success-false")
        return None

    def _answer(
        self, config: SimulatorConfig, headers: Mapping[str, str], batch: int | None, build: Callable[[], Any]
    ) -> _Reply:
        """Draw this call's fault and build the reply; `build` makes the normal answer (and its side effects)."""
        with self._lock:
            kind, hang = self._draw_fault(config)
        delay = config.latency + (config.hang_seconds if hang else 0.0)
        reply = self._failure(kind, config, headers)
        if reply is None:
            answer = build()
            reply = _Reply(200, answer)
            if kind == "malformed":
                reply.text, reply.note = _drop_first_comma(json.dumps(answer)), "malformed"
        reply.delay, reply.batch = delay, batch
        if hang:
            reply.note = "+".join(filter(None, ("hang", reply.note)))
        return reply

    def _handle_status(self, decoded: Any, headers: Mapping[str, str], config: SimulatorConfig) -> _Reply:
        # The contract allows one ID as a JSON string or several as a list of strings.
        if isinstance(decoded, str):
            decoded = [decoded]
        if not isinstance(decoded, list) or not all(isinstance(item, str) for item in decoded):
            return _Reply(400, _error_body("Body must be a tracking ID string or a JSON list of them"))
        with self._lock:
            self._status_requests.append(list(decoded))
        ids = [item.strip() for item in decoded]
        return self._answer(config, headers, len(ids), lambda: self.status_answer(ids))

    def _handle_submit(self, decoded: Any, headers: Mapping[str, str], config: SimulatorConfig) -> _Reply:
        if isinstance(decoded, dict):
            decoded = [decoded]
        problem = _submit_problem(decoded)
        if problem:
            return _Reply(400, _error_body(problem))
        with self._lock:
            self._submit_requests.append(list(decoded))
        # One tracking ID covers the whole list, as in the docs; the first request is what it echoes back later.
        first = decoded[0]

        def build() -> dict[str, Any]:
            tracking_id = self.submit(
                data_source_name=first["data_source_name"],
                object_name=first["object_name"],
                data_samples=first.get("data_samples"),
            )
            return self._envelope({"tracking_id": tracking_id}, config)

        return self._answer(config, headers, len(decoded), build)

    def _handle_control(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        if not self._authorised(headers, self._config):
            return _Reply(401, _error_body(_INVALID_TOKEN))
        routes: dict[str, tuple[str, Callable[[Any], Any]]] = {
            "/_sim/state": ("GET", lambda _: self.state()),
            "/_sim/config": ("POST", self._control_config),
            "/_sim/scans": ("POST", self._control_scans),
            "/_sim/fail-next": ("POST", self._control_fail_next),
            "/_sim/reset-log": ("POST", self._control_reset_log),
        }
        if path not in routes:
            return _Reply(404, _error_body(f"No such control endpoint: {path[:100]}"))
        allowed, action = routes[path]
        if method != allowed:
            return _Reply(
                405, _error_body(f"{method} is not allowed here; use {allowed}"), headers={"Allow": allowed}
            )
        decoded = None
        if allowed == "POST":
            try:
                decoded = json.loads(body.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError):
                return _Reply(400, _error_body("Request body is not valid JSON"))
        try:
            result = action(decoded)
        except (ValueError, TypeError, KeyError) as exc:
            return _Reply(400, _error_body(str(exc)))
        return _Reply(200, {"data": result, "success": "true", "error": {"message": ""}})

    def _control_config(self, decoded: Any) -> dict[str, Any]:
        if not isinstance(decoded, dict):
            raise ValueError("Body must be a JSON object of settings to change")
        if "token" in decoded:
            # The token guards the control endpoints themselves; changing it remotely would lock the caller out.
            raise ValueError("the token cannot be changed over HTTP")
        self.configure(**decoded)
        return self.state()

    def _control_scans(self, decoded: Any) -> dict[str, Any]:
        specs = [decoded] if isinstance(decoded, dict) else decoded
        if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
            raise ValueError("Body must be a JSON list of scan objects")
        prepared = [_scan_kwargs(spec) for spec in specs]  # validate all before adding any
        with self._lock:
            added = [self.add_scan(tracking_id, **kwargs) for tracking_id, kwargs in prepared]
        return {"added": added}

    def _control_fail_next(self, decoded: Any) -> dict[str, Any]:
        if not isinstance(decoded, dict):
            raise ValueError('Body must be a JSON object like {"count": 2, "kind": "500"}')
        self.fail_next(decoded.get("count", 1), decoded.get("kind", "500"))
        return self.state()

    def _control_reset_log(self, _decoded: Any) -> dict[str, Any]:
        self.reset_log()
        return self.state()

    def log_request(self, method: str, path: str, reply: _Reply) -> None:
        """Write one line about a finished request to stderr (never headers, so never the token)."""
        if self._config.quiet:
            return
        batch = f" batch={reply.batch}" if reply.batch is not None else ""
        outcome = "dropped" if reply.drop else str(reply.code)
        note = f" ({reply.note})" if reply.note else ""
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        sys.stderr.write(f"[simulator {stamp}] {method} {path[:100]}{batch} -> {outcome}{note}\n")


_SCAN_SPEC_FIELDS = {
    "status",
    "submitted_at",
    "started_at",
    "ended_at",
    "error_msg",
    "data_source",
    "object_name",
    "data_samples",
    "pending_seconds",
    "running_seconds",
    "outcome",
}


def _scan_kwargs(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Turn a JSON scan object from POST /_sim/scans into add_scan() arguments, validating types."""
    tracking_id = spec.get("tracking_id")
    if not isinstance(tracking_id, str):
        raise ValueError("each scan needs a tracking_id string")
    unknown = sorted(set(spec) - _SCAN_SPEC_FIELDS - {"tracking_id"})
    if unknown:
        raise ValueError(f"unknown scan field(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    if "submitted_at" in spec and spec["submitted_at"] is None:
        kwargs["submitted_at"] = None  # explicitly blank, as add_scan(submitted_at=None)
    for name in ("submitted_at", "started_at", "ended_at"):
        value = spec.get(name)
        if value is None:
            continue
        try:
            kwargs[name] = _aware(datetime.fromisoformat(str(value)))
        except ValueError:
            raise ValueError(f"{name} must be an ISO date-time, not {value!r}") from None
    for name in ("status", "error_msg", "data_source", "outcome"):
        if spec.get(name) is not None:
            if not isinstance(spec[name], str):
                raise ValueError(f"{name} must be a string")
            kwargs[name] = spec[name]
    for name in ("pending_seconds", "running_seconds"):
        if spec.get(name) is not None:
            if not _is_number(spec[name]) or spec[name] < 0:
                raise ValueError(f"{name} must be a number of seconds, at least 0")
            kwargs[name] = float(spec[name])
    if "object_name" in spec:
        names = spec["object_name"]
        if not isinstance(names, str) and not (
            isinstance(names, list) and all(isinstance(part, str) for part in names)
        ):
            raise ValueError("object_name must be a string or a list of strings")
        kwargs["object_name"] = names
    if "data_samples" in spec:
        if not isinstance(spec["data_samples"], list):
            raise ValueError("data_samples must be a list")
        kwargs["data_samples"] = spec["data_samples"]
    return tracking_id, kwargs


def _submit_problem(decoded: Any) -> str:
    """Why a Data Scan Async body is unacceptable, or "" when it is fine."""
    if not isinstance(decoded, list) or not decoded:
        return "Body must be a non-empty JSON list of scan requests"
    for request in decoded:
        if not isinstance(request, dict):
            return "Each scan request must be a JSON object"
        source = request.get("data_source_name")
        if not isinstance(source, str) or not source.strip():
            return "Each scan request needs a data_source_name"
        names = request.get("object_name")
        if not (isinstance(names, str) and names) and not (
            isinstance(names, list) and names and all(isinstance(part, str) for part in names)
        ):
            return "Each scan request needs an object_name (a list of names)"
        if "data_samples" in request and not isinstance(request["data_samples"], list | type(None)):
            return "data_samples must be a list"
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default joins every handler thread on close, which would make stop() wait out a simulated hang.
    block_on_close = False

    def __init__(self, address: tuple[str, int], simulator: ProtectoSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (read timeouts in the tests) close their socket mid-answer; that is expected.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ProtectoSimulator/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm meets the client's delayed
        # ACK and every answer takes ~40 ms longer, which slows every test that polls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        # Replaced by ProtectoSimulator.log_request: one line per request, with the batch size, no client noise.
        return

    def _dispatch(self) -> None:
        simulator = self.server.simulator
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send(_Reply(411, _error_body("Send a Content-Length; chunked bodies are not supported")))
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY_BYTES:
            self._send(_Reply(413 if length > 0 else 400, _error_body("Bad or too large Content-Length")))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        reply = simulator.handle(self.command, self.path, self.headers, body)
        if reply.delay and simulator._stopping.wait(reply.delay):
            reply = _Reply(drop=True, note="stopped")
        # Logged before answering: a client that stops the simulator as soon as it has its answer still finds
        # the line in the log.
        simulator.log_request(self.command, self.path, reply)
        if reply.drop:
            self.close_connection = True
        else:
            self._send(reply)

    def _send(self, reply: _Reply) -> None:
        body = reply.body()
        self.send_response(reply.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _dispatch
