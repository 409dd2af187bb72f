"""Every input of the pages: the list's query-string filters, pasted IDs and CSV uploads, labels, selections."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.utils import timezone

from scans import id_input, problems, selection
from scans.models import Alert, Scan, tracking_id_problem
from scans.selectors import (
    CUSTOM,
    DEFAULT_PER_PAGE,
    DEFAULT_SORT,
    DEFAULT_TIME_FIELD,
    PER_PAGE_CHOICES,
    SORT_CHOICES,
    STATUS_VALUES,
    TIME_FIELDS,
    TIME_WINDOWS,
    ScanFilters,
)

MAX_IDS_PER_SUBMISSION = id_input.MAX_ENTRIES
# More than a page of the list can hold (100 rows), fewer than Django's 1,000-field limit on a request.
MAX_SELECTED = 500
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_PAGE = 1_000_000
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
    error = forms.CharField(required=False, max_length=problems.SIGNATURE_MAX_LENGTH)  # a Problems group's link
    sort = _KnownValueField(what="sort", choices=SORT_CHOICES)
    time = _KnownValueField(what="time field", choices=[(name, name) for name in TIME_FIELDS])
    when = _KnownValueField(what="time range", choices=[(name, name) for name in (*TIME_WINDOWS, CUSTOM)])
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
        if start and end and start > end and data.get("when") not in TIME_WINDOWS:  # a preset ignores the days
            data["from"], data["to"] = end, start
            self.add_error(None, "The 'from' date is after the 'to' date; the dates were swapped.")
        return data

    @property
    def problems(self) -> list[str]:
        """Every message about the query string, for the page."""
        return [message for messages in self.errors.values() for message in messages]

    def filters(self) -> ScanFilters:
        """What to show: each valid value, the default for each missing or bad one. Call after is_valid().

        Days are read on the viewer's clock (the zone dashboard.middleware activated). A preset drops them;
        days without a preset (links from before the presets) are a custom range.
        """
        data = self.cleaned_data
        when = data.get("when") or ""
        days = (None, None) if when in TIME_WINDOWS else (data.get("from"), data.get("to"))
        if any(days):
            when = CUSTOM
        return ScanFilters(
            status=data.get("status") or "",
            q=(data.get("q") or "").strip(),
            source=(data.get("source") or "").strip(),
            time_field=data.get("time") or DEFAULT_TIME_FIELD,
            when=when,
            day_from=days[0],
            day_to=days[1],
            zone=timezone.get_current_timezone_name(),
            sort=data.get("sort") or DEFAULT_SORT,
            archived=bool(data.get("archived")),
            page=min(data.get("page") or 1, MAX_PAGE),
            per_page=data.get("per") or DEFAULT_PER_PAGE,
            error=(data.get("error") or "").strip(),
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


class AddScansForm(forms.Form):
    """Pasted IDs and/or a CSV file, read by scans.id_input into the IDs to add, the repeats and the rejects."""

    ids = forms.CharField(
        label="Tracking IDs",
        required=False,
        strip=False,  # kept as typed, for the preview's Edit button; every entry is trimmed when read
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
        help_text=(
            "One per line, or separated by commas, semicolons or tabs. A pasted link to a scan, or a line like "
            "tracking_id: …, gives its ID."
        ),
    )
    csv_file = forms.FileField(
        label="Or a CSV file",
        required=False,
        help_text=(
            "Comma, semicolon or tab separated. A column named Tracking ID (or tracking_id, id, scan id) and "
            "optionally Label; without such a header, the IDs are read from the first column."
        ),
    )
    label = forms.CharField(label="Label", required=False, max_length=id_input.MAX_LABEL)

    csv_name = ""
    preview_above = id_input.PREVIEW_ABOVE  # for the page's note on when it asks first

    def clean_csv_file(self) -> str:
        upload = self.cleaned_data.get("csv_file")
        if not upload:
            return ""
        self.csv_name = upload.name or ""
        if upload.size > MAX_CSV_BYTES:
            raise ValidationError(f"The CSV file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB.")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError("The CSV file is not UTF-8 text.") from None
        if "\x00" in text:  # not text at all (or UTF-16 without a BOM); PostgreSQL would refuse the labels
            raise ValidationError("The CSV file contains a NUL character: save it as CSV (UTF-8) text.")
        return text

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        try:
            parsed = id_input.read(pasted=data.get("ids", ""), csv_text=data.get("csv_file", ""))
        except id_input.IdInputError as exc:
            self.add_error("csv_file", str(exc))
            return data
        if not parsed.size:
            raise ValidationError("Paste at least one tracking ID or choose a CSV file.")
        if parsed.size > MAX_IDS_PER_SUBMISSION:
            raise ValidationError(f"At most {MAX_IDS_PER_SUBMISSION} IDs at once; this has {parsed.size}.")
        data["parsed"] = parsed
        return data

    def resubmission(self) -> dict[str, str]:
        """What the preview posts back: the reading (to add) and the text as typed (to edit); after is_valid()."""
        data = self.cleaned_data
        return {
            "parsed": data["parsed"].to_json(),
            "label": data["label"],
            "ids": data["ids"],
            "csv_name": self.csv_name,
        }


class AddScansConfirmForm(forms.Form):
    """The preview's "Add" button: the reading it showed, posted back and checked again."""

    parsed = forms.CharField(widget=forms.HiddenInput)
    label = forms.CharField(required=False, max_length=id_input.MAX_LABEL)

    def clean_parsed(self) -> id_input.IdInput:
        try:
            return id_input.IdInput.from_json(self.cleaned_data["parsed"])
        except id_input.IdInputError as exc:
            raise ValidationError(str(exc)) from None


class AddScansEditForm(forms.Form):
    """The preview's "Edit" button: the text as typed, to put back in the Add form."""

    ids = forms.CharField(required=False, strip=False)
    label = forms.CharField(required=False, max_length=id_input.MAX_LABEL)
    csv_name = forms.CharField(required=False, max_length=255)


class LabelForm(forms.Form):
    """A scan's label; blank clears it."""

    label = forms.CharField(required=False, max_length=200)


# The two scopes of a bulk action: the rows ticked on the page, or every scan matching the list's filters.
ROWS, MATCHING = "rows", "matching"
# Query-string parameters that page or order the list without changing which scans match.
_PRESENTATION = ("page", "per", "sort", "v")


class ScanSelectionForm(forms.Form):
    """What a bulk action applies to: the rows ticked in the list, or (scope "matching") every scan matching the
    list's filters, posted as its query string and read again here through ScanFilterForm.

    After is_valid(), cleaned_data["selection"] is a scans.selection.ScanSelection.
    """

    scope = forms.ChoiceField(required=False, choices=[(ROWS, ROWS), (MATCHING, MATCHING)])
    ids = TrackingIdsChoiceField(required=False)
    query = forms.CharField(required=False, max_length=2000, strip=False)

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        if data.get("scope") == MATCHING:
            data["selection"] = self._matching(data.get("query", ""))
        elif data.get("ids"):
            data["selection"] = selection.scan_selection_rows(scans=data["ids"])
        else:
            raise ValidationError("Select at least one scan first.")
        return data

    def _matching(self, query: str) -> selection.ScanSelection:
        params = QueryDict(query.removeprefix("?"), mutable=True)
        for name in _PRESENTATION:
            params.pop(name, None)
        filter_form = ScanFilterForm(params)
        if not filter_form.is_valid():
            # The list ignores a bad filter and shows more; a bulk action must never act on more than was meant.
            problems = " ".join(filter_form.problems)
            raise ValidationError(f"Nothing was changed: the filters have a problem ({problems})")
        chosen = selection.scan_selection_matching(filters=filter_form.filters(), now=timezone.now())
        if chosen.count > selection.BULK_MAX:
            raise ValidationError(
                f"These filters match {chosen.count:,} scans; a bulk action takes at most {selection.BULK_MAX:,}. "
                "Narrow the filters and try again."
            )
        if not chosen.count:
            raise ValidationError("No scan matches these filters any more: nothing was changed.")
        return chosen


class BulkLabelForm(ScanSelectionForm):
    """The selection and the label to give it: a label is required, clearing is its own action (Clear label)."""

    label = forms.CharField(
        max_length=200,
        error_messages={
            "required": "Type a label, or use Clear label.",
            "max_length": "A label is at most 200 characters.",
        },
    )


class ArchiveUndoForm(forms.Form):
    """The "Undo" of a bulk archive: the archive's own time, which every scan it archived carries."""

    archived_at = forms.DateTimeField(
        error_messages={"required": "Nothing to undo.", "invalid": "No such archive."}
    )

    def clean(self) -> dict:
        data = super().clean()
        if not self.errors:
            data["selection"] = selection.scan_selection_archived_at(archived_at=data["archived_at"])
        return data


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


# The farthest ahead a window may end: far enough to schedule next quarter's maintenance, near enough that a
# forgotten snooze does not silence alerts for good, and far from the last date a database can hold.
SNOOZE_MAX_AHEAD = timedelta(days=90)
SNOOZE_MORNING = time(8, 0)
_CUSTOM = "custom"


class SnoozeForm(forms.Form):
    """A maintenance window: a preset (1 h, 4 h, until 08:00 tomorrow) or custom times, in the viewer's time zone.

    Times are read in the zone the request activated (dashboard.middleware.ViewerTimeZoneMiddleware) and named in
    the labels; after is_valid(), cleaned_data["starts_at"] and ["until"] are aware datetimes, stored in UTC.
    """

    preset = forms.ChoiceField(
        label="Snooze",
        initial="1h",
        widget=forms.RadioSelect,
        choices=[
            ("1h", "For 1 hour"),
            ("4h", "For 4 hours"),
            ("morning", "Until 08:00 tomorrow"),
            (_CUSTOM, "Custom"),
        ],
        error_messages={"required": "Choose how long to snooze."},
    )
    starts_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Blank: now.",
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    )
    reason = forms.CharField(required=False, max_length=200)

    def __init__(self, *args, now: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.now = now
        self.zone = timezone.get_current_timezone()
        zone_name = timezone.get_current_timezone_name()
        self.fields["starts_at"].label = f"From ({zone_name})"
        self.fields["until"].label = f"Until ({zone_name})"
        morning = self._morning()
        self.fields["preset"].choices = [
            (value, f"{text} ({morning:%a %d %b})" if value == "morning" else text)
            for value, text in self.fields["preset"].choices
        ]

    def _morning(self) -> datetime:
        """08:00 tomorrow on the viewer's clock (a DST change tonight is taken into account by the zone)."""
        tomorrow = timezone.localtime(self.now, self.zone).date() + timedelta(days=1)
        return datetime.combine(tomorrow, SNOOZE_MORNING, tzinfo=self.zone)

    def clean(self) -> dict:
        data = super().clean()
        preset = data.get("preset")
        if self.errors or not preset:
            return data
        starts_at, until = data.get("starts_at"), data.get("until")
        if preset != _CUSTOM:
            if starts_at or until:
                raise ValidationError("Choose “Custom” to use the From and Until times, or clear them.")
            hours = {"1h": 1, "4h": 4}.get(preset)
            data["starts_at"] = self.now
            data["until"] = self.now + timedelta(hours=hours) if hours else self._morning()
            return data
        if until is None:
            raise ValidationError("Give the end of the snooze (Until).")
        # A start a moment ago (the form took a while to fill in) means now.
        starts_at = max(starts_at or self.now, self.now)
        if until <= self.now:
            raise ValidationError("The end of the snooze must be in the future.")
        if until <= starts_at:
            raise ValidationError("The end of the snooze must be after its start.")
        if until > self.now + SNOOZE_MAX_AHEAD:
            raise ValidationError(f"A snooze must end within {SNOOZE_MAX_AHEAD.days} days.")
        data["starts_at"], data["until"] = starts_at, until
        return data
