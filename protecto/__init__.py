"""Protecto's Data Scan APIs, spoken over HTTP: the client, its typed records and errors. No Django here.

The contract this package speaks, quirks included, is written down in docs/protecto-api.md. The package is
split by concern: `protecto.client` (HTTP: timeouts, retries, redaction), `protecto.transport` (one attempt
bounded by a deadline and an answer size limit), `protecto.answers` (reading the answers into `ScanReport`
records) and `protecto.errors` (the `ProtectoError` family).
"""

from protecto.answers import (
    CANONICAL_STATUSES,
    UNKNOWN,
    ScanReport,
    normalise_status,
    parse_status_answer,
    parse_submit_answer,
    parse_timestamp,
)
from protecto.client import ProtectoClient
from protecto.errors import ProtectoAuthError, ProtectoBadAnswer, ProtectoError, ProtectoUnavailable

__all__ = [
    "CANONICAL_STATUSES",
    "UNKNOWN",
    "ProtectoAuthError",
    "ProtectoBadAnswer",
    "ProtectoClient",
    "ProtectoError",
    "ProtectoUnavailable",
    "ScanReport",
    "normalise_status",
    "parse_status_answer",
    "parse_submit_answer",
    "parse_timestamp",
]
