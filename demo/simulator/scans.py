"""A simulated scan, its clock (PENDING -> IN-PROGRESS -> SUCCESS/FAILED) and its answer in both API shapes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.simulator.config import FAILED, IN_PROGRESS, PENDING, SUCCESS, SimulatorConfig

_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


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

    def pin(self, status: str, now: datetime, started_at: datetime | None, ended_at: datetime | None) -> None:
        """Serve exactly `status` from now on; timestamps the status implies but the caller left out are now."""
        canonical = status.strip().upper()
        if canonical in (IN_PROGRESS, SUCCESS, FAILED):
            started_at = started_at or max(self.submitted_at or now, now)
        if canonical in (SUCCESS, FAILED):
            ended_at = ended_at or max(started_at or now, now)
        self.pinned_status = status
        self.pending_for = self.running_for = None
        self.started_at, self.ended_at = started_at, ended_at

    def to_record(self) -> dict[str, Any]:
        """The scan as JSON-ready data (timestamps as ISO text), for the saved state file."""
        record = dataclasses.asdict(self)
        for name in _TIME_FIELDS:
            record[name] = record[name].isoformat() if record[name] is not None else None
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SimulatedScan:
        """The scan to_record() wrote; ValueError (or KeyError/TypeError) when the record is not one."""
        values = dict(record)
        for name in _TIME_FIELDS:
            values[name] = aware(datetime.fromisoformat(values[name])) if values.get(name) is not None else None
        return cls(**values)

    def backdate_to(self, status: str, now: datetime) -> None:
        """Move a planned scan's submission back so that it enters `status` (a known status) right now."""
        pending, running = self.pending_for or 0.0, self.running_for or 0.0
        back = {PENDING: 0.0, IN_PROGRESS: pending}.get(status, pending + running)
        self.submitted_at = now - timedelta(seconds=back)


_TIME_FIELDS = ("submitted_at", "started_at", "ended_at")


def format_time(value: datetime | None) -> str | None:
    """A timestamp as Protecto writes it: no zone (the simulator always writes UTC), microseconds."""
    return value.astimezone(UTC).strftime(_TIMESTAMP_FORMAT) if value is not None else None


def aware(value: datetime | None) -> datetime | None:
    """Read a naive datetime as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def render_item(scan: SimulatedScan, config: SimulatorConfig, now: datetime) -> dict[str, Any]:
    """The item a status call carries for `scan` at `now`, in the configured shape (2024 or 2025)."""
    status, started, ended, error = scan.state_at(now)
    if scan.trailing_space and scan.pinned_status is None:
        status += " "  # as in the docs' own examples
    error_msg = error or "-"
    if config.shape == "2024":
        return {
            "tracking_id": scan.tracking_id,
            "status": status,
            "submitted_at": format_time(scan.submitted_at) or "-",
            "process_started_at": format_time(started) or "-",
            "process_ended_at": format_time(ended) or "-",
            "error_msg": error_msg,
        }
    return {
        "tracking_id": scan.tracking_id,
        "request_status": status,
        "submitted_at": format_time(scan.submitted_at),
        "process_started_at": format_time(started),
        "process_ended_at": format_time(ended),
        "error_msg": error_msg,
        "input_payload": {
            "data_source_name": scan.data_source,
            "object_name": list(scan.object_name),
            "data_samples": list(scan.data_samples),
        },
    }


def envelope(data: Any, config: SimulatorConfig) -> dict[str, Any]:
    """Wrap a successful answer; the 2024 docs send success as a string, 2025 answers as a boolean."""
    success: str | bool = "true" if config.shape == "2024" else True
    return {"data": data, "success": success, "error": {"message": ""}}
