"""Input parsing for the pages: query-string filters, pasted IDs and CSV uploads, labels, bulk actions."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

from django import forms
from django.core.exceptions import ValidationError

from scans.models import Alert, Scan
from scans.selectors import (
    DEFAULT_PER_PAGE,
    DEFAULT_SORT,
    PER_PAGE_CHOICES,
    STUCK,
    ScanFilters,
    valid_sort,
)

MAX_IDS_PER_SUBMISSION = 5000
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_PAGE = 1_000_000
_ID_SEPARATORS = re.compile(r"[\s,;]+")
STATUS_VALUES = {*Scan.Status.values, STUCK}


def parse_filters(params) -> tuple[ScanFilters, list[str]]:
    """Read the list's filters from a query string; bad values are dropped with a message, never an error."""
    problems: list[str] = []
    status = params.get("status", "").strip().upper()
    if status and status not in STATUS_VALUES:
        problems.append(f"Unknown status {status[:40]!r} ignored.")
        status = ""
    sort = params.get("sort", DEFAULT_SORT).strip() or DEFAULT_SORT
    if not valid_sort(sort):
        problems.append(f"Unknown sort {sort[:40]!r} ignored.")
        sort = DEFAULT_SORT
    submitted_from = _date(params, "from", problems)
    submitted_to = _date(params, "to", problems)
    if submitted_from and submitted_to and submitted_from > submitted_to:
        problems.append("The 'from' date is after the 'to' date; the dates were swapped.")
        submitted_from, submitted_to = submitted_to, submitted_from
    per_page = _whole(params.get("per"), DEFAULT_PER_PAGE)
    if per_page not in PER_PAGE_CHOICES:
        per_page = DEFAULT_PER_PAGE
    filters = ScanFilters(
        status=status,
        q=_text(params, "q"),
        source=_text(params, "source"),
        submitted_from=submitted_from,
        submitted_to=submitted_to,
        sort=sort,
        archived=params.get("archived") == "1",
        page=min(max(_whole(params.get("page"), 1), 1), MAX_PAGE),
        per_page=per_page,
    )
    return filters, problems


def _text(params, name: str) -> str:
    # PostgreSQL refuses NUL in any text parameter; no tracking ID, label or source can contain one.
    return params.get(name, "").replace("\x00", "").strip()[:200]


def _whole(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _date(params, name: str, problems: list[str]) -> date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(f"{name.capitalize()} date {raw[:40]!r} is not a date (YYYY-MM-DD); ignored.")
        return None


def split_ids(text: str) -> list[str]:
    """IDs pasted one per line, or separated by commas, semicolons or spaces."""
    return [part for part in _ID_SEPARATORS.split(text) if part]


class AddScansForm(forms.Form):
    ids = forms.CharField(
        label="Tracking IDs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
        help_text="One per line, or separated by commas or spaces.",
    )
    csv_file = forms.FileField(
        label="Or a CSV file",
        required=False,
        help_text="A column named tracking_id (and optionally label), or the IDs in the first column.",
    )
    label = forms.CharField(label="Label", required=False, max_length=200)

    def clean_csv_file(self) -> list[tuple[str, str]]:
        upload = self.cleaned_data.get("csv_file")
        if not upload:
            return []
        if upload.size > MAX_CSV_BYTES:
            raise ValidationError(f"The CSV file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB.")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("The CSV file is not UTF-8 text.") from None
        if "\x00" in text:  # not text at all (or UTF-16 without a BOM); PostgreSQL would refuse the labels
            raise ValidationError("The CSV file contains a NUL character: save it as CSV (UTF-8) text.")
        return _csv_rows(text)

    def clean(self) -> dict:
        data = super().clean()
        entries = [(tracking_id, "") for tracking_id in split_ids(data.get("ids", ""))]
        entries += data.get("csv_file") or []
        if not entries and not self.errors:
            raise ValidationError("Paste at least one tracking ID or choose a CSV file.")
        if len(entries) > MAX_IDS_PER_SUBMISSION:
            raise ValidationError(f"At most {MAX_IDS_PER_SUBMISSION} IDs at once; this has {len(entries)}.")
        data["entries"] = entries
        return data


def _csv_rows(text: str) -> list[tuple[str, str]]:
    """(tracking ID, label) pairs from a CSV: a tracking_id/label header if there is one, else column one."""
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise ValidationError(f"The CSV file could not be read: {exc}") from None
    if not rows:
        raise ValidationError("The CSV file has no rows.")
    header = [cell.strip().lower() for cell in rows[0]]
    id_column, label_column = 0, None
    if "tracking_id" in header:
        id_column = header.index("tracking_id")
        label_column = header.index("label") if "label" in header else None
        rows = rows[1:]
    entries = []
    for row in rows:
        tracking_id = row[id_column].strip() if id_column < len(row) else ""
        label = row[label_column].strip() if label_column is not None and label_column < len(row) else ""
        entries.append((tracking_id, label))
    return entries


class LabelForm(forms.Form):
    label = forms.CharField(required=False, max_length=200)


class BulkActionForm(forms.Form):
    ACTIONS = (("refresh", "Refresh now"), ("archive", "Archive"), ("restore", "Restore"), ("label", "Set label"))

    action = forms.ChoiceField(choices=ACTIONS)
    ids = forms.CharField(widget=forms.MultipleHiddenInput, required=False)
    label = forms.CharField(required=False, max_length=200)

    def __init__(self, data=None, **kwargs) -> None:
        super().__init__(data, **kwargs)
        self._tracking_ids = data.getlist("ids") if data is not None else []

    def clean(self) -> dict:
        data = super().clean()
        # NUL never occurs in a tracking ID, and PostgreSQL refuses it in a query parameter.
        tracking_ids = [value.strip() for value in self._tracking_ids if value.strip() and "\x00" not in value]
        if not tracking_ids:
            raise ValidationError("Select at least one scan first.")
        if len(tracking_ids) > 1000:
            raise ValidationError("At most 1000 scans at once.")
        data["tracking_ids"] = tracking_ids
        return data


class SubscriptionForm(forms.Form):
    email = forms.EmailField(required=False, help_text="Blank: your account's email address.")
    kinds = forms.MultipleChoiceField(
        choices=Alert.Kind.choices, required=False, widget=forms.CheckboxSelectMultiple, label="Send me"
    )


class MuteForm(forms.Form):
    tracking_id = forms.CharField(required=False, max_length=128, label="Scan tracking ID")
    label = forms.CharField(required=False, max_length=200)

    def clean(self) -> dict:
        data = super().clean()
        tracking_id, label = data.get("tracking_id", "").strip(), data.get("label", "").strip()
        if bool(tracking_id) == bool(label):
            raise ValidationError("Give either a tracking ID or a label to mute.")
        if tracking_id:
            data["scan"] = Scan.objects.filter(tracking_id=tracking_id.replace("\x00", "")).first()
            if data["scan"] is None:
                raise ValidationError(f"No tracked scan has the ID {tracking_id[:60]!r}.")
        return data


class SnoozeForm(forms.Form):
    until = forms.DateTimeField(
        label="Until (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    )
    reason = forms.CharField(required=False, max_length=200)

    def __init__(self, *args, now=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.now = now

    def clean_until(self):
        until = self.cleaned_data["until"]
        if self.now and until <= self.now:
            raise ValidationError("The end of the snooze must be in the future.")
        return until
