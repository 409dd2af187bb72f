"""Every input of the pages: the list's query-string filters, pasted IDs and CSV uploads, labels, selections."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

from django import forms
from django.core.exceptions import ValidationError

from scans.models import Alert, Scan, tracking_id_problem
from scans.selectors import (
    DEFAULT_PER_PAGE,
    DEFAULT_SORT,
    PER_PAGE_CHOICES,
    SORT_CHOICES,
    STATUS_VALUES,
    ScanFilters,
)

MAX_IDS_PER_SUBMISSION = 5000
# More than a page of the list can hold (100 rows), fewer than Django's 1,000-field limit on a request.
MAX_SELECTED = 500
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_PAGE = 1_000_000
_ID_SEPARATORS = re.compile(r"[\s,;]+")
_NO_NUL = "null_characters_not_allowed"


class _KnownValueField(forms.ChoiceField):
    """One of a fixed set of values; anything else is reported as "Unknown <what> '<value>' ignored."."""

    def __init__(self, *, what: str, upper: bool = False, **kwargs) -> None:
        self.what, self.upper = what, upper
        super().__init__(required=False, **kwargs)

    def to_python(self, value) -> str:
        value = super().to_python(value).strip()
        return value.upper() if self.upper else value

    def validate(self, value: str) -> None:
        if value and not self.valid_value(value):
            raise ValidationError(f"Unknown {self.what} {value[:40]!r} ignored.", code="invalid_choice")


class _DayField(forms.DateField):
    """A YYYY-MM-DD day; anything else is reported with the value and ignored."""

    def __init__(self, *, what: str, **kwargs) -> None:
        self.what = what
        super().__init__(required=False, input_formats=["%Y-%m-%d"], **kwargs)

    def to_python(self, value) -> date | None:
        try:
            return super().to_python(value)
        except ValidationError:
            shown = str(value).strip()[:40]
            raise ValidationError(f"{self.what} date {shown!r} is not a date (YYYY-MM-DD); ignored.") from None


def _text_field(what: str) -> forms.CharField:
    return forms.CharField(
        required=False,
        max_length=200,
        error_messages={
            "max_length": f"{what} is longer than 200 characters; ignored.",
            _NO_NUL: f"{what} contains a NUL character; ignored.",
        },
    )


class ScanFilterForm(forms.Form):
    """The list's filters, read from the query string. A bad value is reported and ignored, never an error page."""

    status = _KnownValueField(what="status", upper=True, choices=[(value, value) for value in STATUS_VALUES])
    q = _text_field("Search")
    source = _text_field("Data source")
    sort = _KnownValueField(what="sort", choices=SORT_CHOICES)
    per = forms.TypedChoiceField(
        required=False,
        coerce=int,
        choices=[(str(n), str(n)) for n in PER_PAGE_CHOICES],
        error_messages={"invalid_choice": f"Rows per page are 25, 50 or 100; showing {DEFAULT_PER_PAGE}."},
    )
    archived = forms.TypedChoiceField(required=False, coerce=lambda value: value == "1", choices=[("1", "1")])
    page = forms.IntegerField(
        required=False,
        min_value=1,
        error_messages={"invalid": "Not a page number; showing page 1.", "min_value": "Pages start at 1."},
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword, so these two cannot be declared as class attributes.
        self.fields["from"] = _DayField(what="From")
        self.fields["to"] = _DayField(what="To")

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("from"), data.get("to")
        if start and end and start > end:
            data["from"], data["to"] = end, start
            self.add_error(None, "The 'from' date is after the 'to' date; the dates were swapped.")
        return data

    @property
    def problems(self) -> list[str]:
        """Every message about the query string, for the page."""
        return [message for messages in self.errors.values() for message in messages]

    def filters(self) -> ScanFilters:
        """What to show: each valid value, the default for each missing or bad one. Call after is_valid()."""
        data = self.cleaned_data
        return ScanFilters(
            status=data.get("status") or "",
            q=(data.get("q") or "").strip(),
            source=(data.get("source") or "").strip(),
            submitted_from=data.get("from"),
            submitted_to=data.get("to"),
            sort=data.get("sort") or DEFAULT_SORT,
            archived=bool(data.get("archived")),
            page=min(data.get("page") or 1, MAX_PAGE),
            per_page=data.get("per") or DEFAULT_PER_PAGE,
        )


FAILING = "failing"


class AlertFilterForm(forms.Form):
    """The outbox's filters, read from the query string; a bad value is reported and ignored."""

    kind = _KnownValueField(what="kind", choices=Alert.Kind.choices)
    state = _KnownValueField(what="state", choices=[*Alert.State.choices, (FAILING, "Failing to send")])
    q = _text_field("Scan")
    page = forms.CharField(required=False, max_length=20)  # Paginator.get_page() reads any value safely

    def value(self, name: str) -> str:
        """The field's valid value, or "" (call after is_valid())."""
        return self.cleaned_data.get(name) or ""


def _check_tracking_id(value: str) -> None:
    # Checked before the value reaches a query: PostgreSQL answers NUL in a parameter with an error, not a miss.
    problem = tracking_id_problem(value)
    if problem:
        raise ValidationError(f"{value[:60]!r} is not a tracking ID: it {problem}.", code="invalid_choice")


class TrackingIdChoiceField(forms.ModelChoiceField):
    """A tracked scan, named by its tracking ID."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("error_messages", {"invalid_choice": "No tracked scan has this tracking ID."})
        super().__init__(queryset=Scan.objects.all(), to_field_name="tracking_id", **kwargs)

    def to_python(self, value) -> Scan | None:
        value = value.strip() if isinstance(value, str) else value
        if value not in self.empty_values:
            _check_tracking_id(value)
        return super().to_python(value)


class TrackingIdsChoiceField(forms.ModelMultipleChoiceField):
    """Several tracked scans, named by their tracking IDs (the selected rows of the list)."""

    widget = forms.MultipleHiddenInput

    def __init__(self, **kwargs) -> None:
        messages = {
            "required": "Select at least one scan first.",
            "invalid_choice": "No tracked scan has the ID %(value)s.",
        }
        super().__init__(
            queryset=Scan.objects.all(), to_field_name="tracking_id", error_messages=messages, **kwargs
        )

    def clean(self, value):
        values = [item.strip() for item in value or [] if isinstance(item, str) and item.strip()]
        if len(values) > MAX_SELECTED:
            raise ValidationError(f"At most {MAX_SELECTED} scans at once; {len(values)} were selected.")
        for item in values:
            _check_tracking_id(item)
        return super().clean(values)


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
    """A scan's label; blank clears it."""

    label = forms.CharField(required=False, max_length=200)


class ScanSelectionForm(forms.Form):
    """The rows an operator selected in the list."""

    ids = TrackingIdsChoiceField()


class BulkLabelForm(ScanSelectionForm, LabelForm):
    """Selected rows and the label to give them."""


class SubscriptionForm(forms.Form):
    """Which kinds of alert I want, and where."""

    email = forms.EmailField(required=False, help_text="Blank: your account's email address.")
    kinds = forms.MultipleChoiceField(
        choices=Alert.Kind.choices, required=False, widget=forms.CheckboxSelectMultiple, label="Send me"
    )


class MuteForm(forms.Form):
    """What to mute: one scan, by its tracking ID, or every scan with a label."""

    scan = TrackingIdChoiceField(
        required=False,
        label="Scan tracking ID",
        # A text box, not TrackingIdChoiceField's default <select> of every scan.
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        error_messages={"invalid_choice": "No tracked scan has the ID %(value)s."},
    )
    label = forms.CharField(required=False, max_length=200)

    def clean(self) -> dict:
        data = super().clean()
        if not self.errors and (data.get("scan") is None) == (not data.get("label")):
            raise ValidationError("Give either a tracking ID or a label to mute.")
        return data


class SnoozeForm(forms.Form):
    """A maintenance window: no alert is sent until its end, which must be in the future."""

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
