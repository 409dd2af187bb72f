"""Writes of triage: acknowledging failed or stuck scans, one by one or a whole group of the Problems view."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Q

from scans.audit import audit_record
from scans.models import Acknowledgement, AuditEntry, Scan
from scans.models.triage import NOTE_MAX_LENGTH
from scans.problems import problem_group_scans

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def problems_acknowledge(
    *, scan_ids: Iterable[int], note: str, user: AbstractBaseUser, now: datetime, detail: str = ""
) -> int:
    """Acknowledge the given failed or stuck scans with a note; return how many.

    Acknowledging again replaces the earlier note (one per scan). Scans that are neither failed nor stuck are
    left alone: there is nothing to acknowledge. The scans' updated_at is bumped, so open pages show the mark.
    """
    note = note.strip()[:NOTE_MAX_LENGTH]
    failed_or_stuck = Q(status=Scan.Status.FAILED) | Q(pk__in=Scan.objects.stuck(now).values("pk"))
    problems = Scan.objects.filter(pk__in=list(scan_ids)).filter(failed_or_stuck)
    with transaction.atomic():
        ids = list(problems.values_list("pk", flat=True))
        # One statement per batch; a scan acknowledged before (or by a concurrent click) gets the new note.
        Acknowledgement.objects.bulk_create(
            [
                Acknowledgement(scan_id=pk, note=note, user=user, username=user.get_username(), created_at=now)
                for pk in ids
            ],
            batch_size=500,
            update_conflicts=True,
            unique_fields=["scan"],
            update_fields=["note", "user", "username", "created_at"],
        )
        Scan.objects.filter(pk__in=ids).write()
        shown = f"note: {note}" if note else "no note"
        audit_record(
            user=user,
            action=AuditEntry.Action.ACKNOWLEDGE,
            scans=Scan.objects.filter(pk__in=ids),
            detail=f"{detail}; {shown}" if detail else shown,
            now=now,
        )
    return len(ids)


def problem_group_acknowledge(
    *, key: str, since: datetime, note: str, user: AbstractBaseUser, now: datetime
) -> int:
    """Acknowledge every unacknowledged scan of one Problems group (as the view counted it); return how many."""
    scan_ids = list(problem_group_scans(key=key, since=since, now=now).values_list("pk", flat=True))
    return problems_acknowledge(scan_ids=scan_ids, note=note, user=user, now=now, detail=f"group: {key}")
