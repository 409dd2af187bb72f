"""The app's models, one module per subject; everything is importable from scans.models."""

from scans.models.alert import Alert, AlertMute, AlertSnooze, AlertSubscription
from scans.models.refresh_run import RefreshRun, RefreshRunQuerySet
from scans.models.scan import (
    TRACKING_ID_ALPHABET,
    TRACKING_ID_MAX_LENGTH,
    Scan,
    ScanManager,
    ScanPoll,
    ScanQuerySet,
    ScanStatusTally,
    StatusChange,
    due_cutoff,
    stuck_condition,
    stuck_limits,
    tracking_id_problem,
    validate_tracking_id,
)
from scans.models.triage import Acknowledgement, AuditEntry, acknowledgement_holds

__all__ = [
    "TRACKING_ID_ALPHABET",
    "TRACKING_ID_MAX_LENGTH",
    "Acknowledgement",
    "Alert",
    "AlertMute",
    "AlertSnooze",
    "AlertSubscription",
    "AuditEntry",
    "RefreshRun",
    "RefreshRunQuerySet",
    "Scan",
    "ScanManager",
    "ScanPoll",
    "ScanQuerySet",
    "ScanStatusTally",
    "StatusChange",
    "acknowledgement_holds",
    "due_cutoff",
    "stuck_condition",
    "stuck_limits",
    "tracking_id_problem",
    "validate_tracking_id",
]
