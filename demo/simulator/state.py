"""The simulator's state machine: settings, scans on their clock, queued faults and the request log. No sockets.

`SimulatorState` answers API calls as data (a `Reply`); demo/simulator/server.py puts it on a real port.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import json
import random
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from demo.simulator.config import (
    CONFIG_FIELDS,
    DATA_SOURCES,
    FAILED,
    FAILURE_MESSAGES,
    IN_PROGRESS,
    KNOWN_STATUSES,
    OBJECTS,
    PENDING,
    SUCCESS,
    TRACKING_ID,
    SimulatorConfig,
    coerce_setting,
)
from demo.simulator.faults import FAULT_KINDS, Reply, draw_fault, drop_first_comma, error_body, failure_reply
from demo.simulator.persistence import load_scans, save_scans
from demo.simulator.scans import SimulatedScan, aware, envelope, render_item

Clock = Callable[[], datetime]


class Unset(enum.Enum):
    """Tells "argument left out" (use now) apart from an explicit None (the answer has no submission time)."""

    UNSET = "unset"


UNSET = Unset.UNSET


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class SimulatorState:
    """Thread-safe simulator state; every public method may be called from any thread.

    With `state_file` the scans survive a restart: they are read from that JSON file at start and written back
    whenever one is added or changed. A scan's plan is kept in absolute times, so a restarted simulator reports
    every scan where its clock has taken it meanwhile, never an earlier status.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        state_file: Path | str | None = None,
    ) -> None:
        config = config or SimulatorConfig()
        config.validate()
        self._config = config
        self._clock = clock or utc_now
        self._lock = threading.RLock()
        self._rng = random.Random(config.seed)
        self._scans: dict[str, SimulatedScan] = {}
        self._forced: deque[str] = deque()
        self._status_requests: list[list[str]] = []
        self._submit_requests: list[list[dict[str, Any]]] = []
        self._request_count = 0
        self._last_authorization_ok: bool | None = None
        self._last_request_headers: dict[str, str] = {}
        self._overrides: dict[str, list[dict[str, Any]]] = {}
        self._state_file = Path(state_file) if state_file is not None else None
        if self._state_file is not None:
            self._scans = load_scans(self._state_file)

    # --- configuration and deterministic faults -----------------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        """The current settings (replaced as a whole by configure(), so safe to read)."""
        return self._config

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Change settings live, e.g. configure(error_rate=1.0); an invalid change raises ValueError."""
        unknown = sorted(set(changes) - CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(unknown)}")
        coerced = {name: coerce_setting(name, value) for name, value in changes.items()}
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

    def _draw_error(self, scan: SimulatedScan) -> str:
        template = self._rng.choice(FAILURE_MESSAGES)
        return template.format(source=scan.data_source, object="/".join(scan.object_name))

    def add_scan(
        self,
        tracking_id: str,
        *,
        status: str | None = None,
        submitted_at: datetime | Unset | None = UNSET,
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
        planned = status is None or pending_seconds is not None or running_seconds is not None
        canonical = status.strip().upper() if status is not None else None
        _check_new_scan(tracking_id, outcome, canonical if planned else None)
        if planned and (started_at is not None or ended_at is not None):
            raise ValueError("started_at and ended_at apply to pinned scans; a planned scan computes them")
        given_submitted = None if isinstance(submitted_at, Unset) else aware(submitted_at)
        with self._lock:
            now = self._clock()
            scan = SimulatedScan(
                tracking_id=tracking_id,
                submitted_at=None if submitted_at is None and not planned else given_submitted or now,
                data_source=data_source,
                object_name=[object_name] if isinstance(object_name, str) else list(object_name),
                data_samples=list(data_samples or []),
            )
            if planned:
                self._plan(scan, canonical, (pending_seconds, running_seconds), outcome)
                if canonical is not None and given_submitted is None:
                    scan.backdate_to(canonical, now)
            else:
                scan.pin(status or "", now, aware(started_at), aware(ended_at))
            if error_msg is None:
                failing = canonical == FAILED or (planned and scan.outcome == FAILED)
                error_msg = self._draw_error(scan) if failing else ""
            scan.error_msg = error_msg
            self._scans[tracking_id] = scan
            self._save()
        return tracking_id

    def _plan(
        self,
        scan: SimulatedScan,
        canonical: str | None,
        durations: tuple[float | None, float | None],
        outcome: str | None,
    ) -> None:
        """Give a new scan its time plan; durations and outcome left out are drawn from the config."""
        config = self._config
        drawn_pending = self._rng.uniform(*config.pending_seconds)
        drawn_running = self._rng.uniform(*config.running_seconds)
        scan.pending_for = drawn_pending if durations[0] is None else float(durations[0])
        scan.running_for = drawn_running if durations[1] is None else float(durations[1])
        if canonical in (SUCCESS, FAILED):
            outcome = canonical
        scan.outcome = outcome or (FAILED if self._rng.random() < config.failure_rate else SUCCESS)
        scan.trailing_space = self._rng.random() < config.trailing_space_rate

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
            self._save()

    def _save(self) -> None:
        """Write every scan to the state file, if there is one; the caller holds the lock."""
        if self._state_file is None:
            return
        save_scans(self._state_file, self._scans.values())

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
            return render_item(self._scans[tracking_id], self._config, self._clock())

    def override_answer(self, tracking_id: str, items: list[dict[str, Any]] | None) -> None:
        """Answer for this ID with exactly these raw items (none: unreported; two: a duplicate); None undoes it.

        For tests of hostile or inconsistent answers: the items are sent as given, in place of the scan's own.
        """
        with self._lock:
            if items is None:
                self._overrides.pop(tracking_id, None)
            else:
                self._overrides[tracking_id] = [dict(item) for item in items]

    def status_answer(self, tracking_ids: Sequence[str]) -> dict[str, Any]:
        """The full answer a status call for these IDs gets (unknown IDs created or left out per config)."""
        with self._lock:
            config = self._config
            now = self._clock()
            items = []
            for tracking_id in dict.fromkeys(tracking_ids):
                if tracking_id in self._overrides:
                    items.extend(dict(item) for item in self._overrides[tracking_id])
                    continue
                if tracking_id not in self._scans:
                    if not (config.accept_unknown_ids and TRACKING_ID.fullmatch(tracking_id)):
                        continue  # "not reported": the contract's answer for an ID the service does not know
                    source, names = self._rng.choice(DATA_SOURCES), self._rng.choice(OBJECTS)
                    self.add_scan(tracking_id, data_source=source, object_name=names)
                items.append(render_item(self._scans[tracking_id], config, now))
            return envelope(items, config)

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

    # --- API calls, as data (the HTTP server routes requests here) ------------------------------------------

    def authorised(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries `Authorization: Bearer <the configured token>`."""
        scheme, _, presented = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), self._config.token.encode())

    def count_api_request(self) -> None:
        """Count one request outside /_sim/, whatever becomes of it."""
        with self._lock:
            self._request_count += 1

    def check_api_token(self, headers: Mapping[str, str]) -> bool:
        """Whether an API call is authorised; its headers (token masked) and the outcome go into the log."""
        authorised = self.authorised(headers)
        with self._lock:
            self._last_authorization_ok = authorised
            self._last_request_headers = {
                name: ("Bearer ***" if name.lower() == "authorization" else value)
                for name, value in headers.items()
            }
        return authorised

    def answer_status_call(self, decoded: Any, headers: Mapping[str, str]) -> Reply:
        """The reply to an authorised status call whose body decoded to `decoded`."""
        # The contract allows one ID as a JSON string or several as a list of strings.
        if isinstance(decoded, str):
            decoded = [decoded]
        if not isinstance(decoded, list) or not all(isinstance(item, str) for item in decoded):
            return Reply(400, error_body("Body must be a tracking ID string or a JSON list of them"))
        with self._lock:
            self._status_requests.append(list(decoded))
        ids = [item.strip() for item in decoded]
        return self._answer(headers, len(ids), lambda: self.status_answer(ids))

    def answer_submit_call(self, decoded: Any, headers: Mapping[str, str]) -> Reply:
        """The reply to an authorised Data Scan Async call whose body decoded to `decoded`."""
        if isinstance(decoded, dict):
            decoded = [decoded]
        problem = submit_problem(decoded)
        if problem:
            return Reply(400, error_body(problem))
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
            return envelope({"tracking_id": tracking_id}, self._config)

        return self._answer(headers, len(decoded), build)

    def _answer(self, headers: Mapping[str, str], batch: int, build: Callable[[], Any]) -> Reply:
        """Draw this call's fault and build the reply; `build` makes the normal answer (and its side effects)."""
        with self._lock:
            config = self._config
            kind, hang = draw_fault(self._forced, self._rng, config)
        reply = failure_reply(kind, config, headers)
        if reply is None:
            answer = build()
            reply = Reply(200, answer)
            if kind == "malformed":
                reply.text, reply.note = drop_first_comma(json.dumps(answer)), "malformed"
        reply.delay = config.latency + (config.hang_seconds if hang else 0.0)
        reply.batch = batch
        if hang:
            reply.note = "+".join(filter(None, ("hang", reply.note)))
        return reply


def _check_new_scan(tracking_id: str, outcome: str | None, planned_status: str | None) -> None:
    """Refuse an ID outside the contract, an outcome that is not final, or a plan starting in an unknown state."""
    if not isinstance(tracking_id, str) or not TRACKING_ID.fullmatch(tracking_id):
        raise ValueError(f"tracking_id must be 1-128 letters, digits, '-' or '_', not {tracking_id!r}")
    if outcome is not None and outcome not in (SUCCESS, FAILED):
        raise ValueError(f"outcome must be SUCCESS or FAILED, not {outcome!r}")
    if planned_status is not None and planned_status not in KNOWN_STATUSES:
        raise ValueError(f"a planned scan can only start as one of {', '.join(KNOWN_STATUSES)}")


def submit_problem(decoded: Any) -> str:
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
