"""The simulator's settings, its status vocabulary and the contract's limits."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

PENDING = "PENDING"
IN_PROGRESS = "IN-PROGRESS"
SUCCESS = "SUCCESS"
FAILED = "FAILED"
KNOWN_STATUSES = (PENDING, IN_PROGRESS, SUCCESS, FAILED)

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
DATA_SOURCES = ("salesforce", "snowflake", "postgres", "s3", "bigquery")
OBJECTS = (
    ["CustomerDB", "Marketingschema", "Customerstable"],
    ["SalesDB", "public", "orders"],
    ["HR", "employees"],
    ["warehouse", "events", "2025"],
)

# The contract: letters, digits, '-' and '_', up to 128 characters. Other IDs are never reported.
TRACKING_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# The simulator builds a padded answer in memory; past this a typo would exhaust the machine, not test a client.
MAX_HUGE_BYTES = 200_000_000


def is_number(value: object) -> bool:
    """True for a finite int or float (bools are not numbers here)."""
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
    # Answer faults that bound-testing needs (0 or "" is off): every API answer (status line, headers and body)
    # sent one byte every drip_seconds; JSON answers padded to huge_bytes with a long error message; every API
    # call answered 302 to redirect_url.
    drip_seconds: float = 0.0
    huge_bytes: int = 0
    redirect_url: str = ""
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
        self._validate_numbers()
        for name in ("accept_unknown_ids", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be a whole number or null, not {self.seed!r}")
        self._validate_answer_faults()

    def _validate_answer_faults(self) -> None:
        if (
            isinstance(self.huge_bytes, bool)
            or not isinstance(self.huge_bytes, int)
            or not 0 <= self.huge_bytes <= MAX_HUGE_BYTES
        ):
            raise ValueError(f"huge_bytes must be a whole number, 0 to {MAX_HUGE_BYTES}, not {self.huge_bytes!r}")
        url = self.redirect_url
        if not isinstance(url, str) or (url and not url.startswith(("http://", "https://", "/"))):
            raise ValueError(f"redirect_url must be empty, an http(s) URL or a path, not {url!r}")
        if any(char in url for char in "\r\n"):
            raise ValueError("redirect_url must be one line")

    def _validate_numbers(self) -> None:
        for name in ("error_rate", "rate_limit_rate", "malformed_rate", "hang_rate", "failure_rate"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1, not {value!r}")
        if not is_number(self.trailing_space_rate) or not 0 <= self.trailing_space_rate <= 1:
            raise ValueError(f"trailing_space_rate must be between 0 and 1, not {self.trailing_space_rate!r}")
        for name in ("latency", "hang_seconds", "retry_after", "drip_seconds"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds, at least 0, not {value!r}")
        for name in ("pending_seconds", "running_seconds"):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(is_number(part) for part in value)
                or not 0 <= value[0] <= value[1]
            ):
                raise ValueError(f"{name} must be (min, max) seconds with 0 <= min <= max, not {value!r}")

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data, without the token."""
        data = dataclasses.asdict(self)
        del data["token"]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


CONFIG_FIELDS = frozenset(item.name for item in dataclasses.fields(SimulatorConfig))
_TUPLE_FIELDS = {"status_paths", "submit_paths", "pending_seconds", "running_seconds"}


def coerce_setting(name: str, value: Any) -> Any:
    """Accept JSON-friendly spellings (lists for tuples, 2024 as a number) for config changes."""
    if name in _TUPLE_FIELDS and isinstance(value, list):
        return tuple(value)
    if name == "shape" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value
