"""Inputs of the triage pages: the Problems view's window, acknowledgement notes, and the audit log's filters."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError

from scans import problems
from scans.audit import AUDIT_PERIOD_CHOICES, AuditFilters
from scans.models import AuditEntry, tracking_id_problem
from scans.models.triage import NOTE_MAX_LENGTH


class _QueryForm(forms.Form):
    """A query-string form: a bad value is reported on the page and ignored, never an error page."""

    @property
    def problems(self) -> list[str]:
        """Every message about the query string, for the page."""
        return [message for messages in self.errors.values() for message in messages]

    def value(self, name: str):
        """The field's valid value, or its empty value (call after is_valid())."""
        return self.cleaned_data.get(name) or ""


class ProblemsFilterForm(_QueryForm):
    """Since when failures are shown: a preset (1 h, 24 h, 7 d); 24 h when missing or bad."""

    window = forms.ChoiceField(
        required=False,
        choices=problems.WINDOW_CHOICES,
        error_messages={"invalid_choice": "Unknown period; showing the last 24 h."},
    )

    def window_name(self) -> str:
        return self.value("window") or problems.DEFAULT_WINDOW

    def window_length(self) -> timedelta:
        return problems.WINDOWS[self.window_name()]


class AcknowledgeForm(forms.Form):
    """The note an acknowledgement carries ("ticket OPS-123"); it may be blank."""

    note = forms.CharField(required=False, max_length=NOTE_MAX_LENGTH)


class GroupAcknowledgeForm(AcknowledgeForm):
    """A whole group of the Problems view, as it was shown (its key and the window it was counted in)."""

    key = forms.CharField(max_length=problems.SIGNATURE_MAX_LENGTH)
    window = forms.ChoiceField(choices=problems.WINDOW_CHOICES)


class AuditFilterForm(_QueryForm):
    """The audit page's filters: action, who, tracking ID, period, and the keyset page."""

    action = forms.ChoiceField(
        required=False,
        choices=[("", "Any action"), *AuditEntry.Action.choices],
        error_messages={"invalid_choice": "Unknown action %(value)s ignored."},
    )
    user = forms.CharField(
        required=False,
        max_length=150,
        label="Who",
        error_messages={"null_characters_not_allowed": "Who contains a NUL character; ignored."},
    )
    tracking_id = forms.CharField(
        required=False,
        max_length=200,
        label="Tracking ID",
        error_messages={"null_characters_not_allowed": "That is not a tracking ID: it contains NUL; ignored."},
    )
    period = forms.ChoiceField(required=False, choices=AUDIT_PERIOD_CHOICES, label="When")
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)

    def clean_tracking_id(self) -> str:
        value = self.cleaned_data["tracking_id"].strip()
        problem = tracking_id_problem(value) if value else None
        if problem:  # checked before it reaches a query: PostgreSQL refuses NUL in a parameter
            raise ValidationError(f"That is not a tracking ID: it {problem}; ignored.")
        return value

    def filters(self) -> AuditFilters:
        """What to show; call after is_valid()."""
        return AuditFilters(
            action=self.value("action"),
            username=self.value("user").strip(),
            tracking_id=self.value("tracking_id"),
            period=self.value("period"),
            before=self.cleaned_data.get("before"),
        )
