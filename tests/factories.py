"""The shared ways tests make data: scans, refresh runs and users in a role, with sensible defaults."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.utils import timezone

from scans.models import RefreshRun, Scan, ScanPoll

_serial = itertools.count(1)


POLL_FIELDS = ("next_check_at", "claim_token", "last_checked_at", "last_reported_at")


def make_scan(tracking_id: str | None = None, **fields: object) -> Scan:
    """A tracked scan; its tracking ID is unique (and contains no search-worthy text) unless one is given.

    Poll fields (next_check_at, claim_token, last_checked_at, last_reported_at) go on the poll row the database
    inserts with the scan.
    """
    poll = {name: fields.pop(name) for name in POLL_FIELDS if name in fields}
    scan = Scan.objects.create(tracking_id=tracking_id or f"scan-{next(_serial):05d}", **fields)
    if poll:
        ScanPoll.objects.filter(scan=scan).update(**poll)
    return Scan.objects.select_related("poll").get(pk=scan.pk)


def make_refreshed_scan(
    tracking_id: str, status: str, *, label: str = "", data_source: str = "snowflake", error: str = ""
) -> Scan:
    """A scan as a refresh would have stored it, submitted ten minutes ago (so never stuck).

    Every time a refresh writes is filled in the way the refresh writes it: started unless pending, ended and
    no longer due when final, due again in an hour otherwise (so no poll in a test changes it).
    """
    now = timezone.now()
    submitted = now - timedelta(minutes=10)
    started = submitted + timedelta(minutes=1) if status != Scan.Status.PENDING else None
    final = status in Scan.TERMINAL
    return make_scan(
        tracking_id,
        status=status,
        raw_status=status,
        submitted_at=submitted,
        started_at=started,
        ended_at=started + timedelta(minutes=4) if final else None,
        error_message=error,
        label=label,
        data_source=data_source,
        last_checked_at=now,
        last_changed_at=now,
        next_check_at=None if final else now + timedelta(hours=1),
    )


def make_refresh_run(**fields: object) -> RefreshRun:
    """A refresh cycle that finished OK just now, unless `fields` say otherwise."""
    defaults: dict[str, object] = {"outcome": RefreshRun.Outcome.OK, "finished_at": timezone.now()}
    return RefreshRun.objects.create(**{**defaults, **fields})


def make_user_in_group(username: str, group: str) -> AbstractBaseUser:
    """A user in one of the role groups, with the password `pw-<username>-1` (the browser tests log in with it)."""
    user = get_user_model().objects.create_user(username=username, password=f"pw-{username}-1")
    user.groups.add(Group.objects.get(name=group))  # the groups come from the roles migration
    return user
