"""Protecto's Data Scan APIs, spoken over HTTP: the client, its typed records and errors. No Django here.

The contract this package speaks is written down in docs/protecto-api.md.
"""

from protecto.client import (
    ProtectoAuthError,
    ProtectoBadAnswer,
    ProtectoClient,
    ProtectoError,
    ProtectoUnavailable,
    ScanReport,
)

__all__ = [
    "ProtectoAuthError",
    "ProtectoBadAnswer",
    "ProtectoClient",
    "ProtectoError",
    "ProtectoUnavailable",
    "ScanReport",
]
