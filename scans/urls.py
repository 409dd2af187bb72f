"""URL routes of the scans app."""

from django.urls import path, register_converter

from scans.models import TRACKING_ID_ALPHABET, TRACKING_ID_MAX_LENGTH
from scans.views import alerts as alert_views
from scans.views import health
from scans.views import scans as scan_views
from scans.views import triage as triage_views


class TrackingIdConverter:
    """Only a well-formed tracking ID reaches a scan view: anything else (NUL, slashes, 10 KB) is a 404 here."""

    regex = f"[{TRACKING_ID_ALPHABET}]{{1,{TRACKING_ID_MAX_LENGTH}}}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class RowIdConverter:
    """A database row ID: at most 18 digits, so it always fits a 64-bit integer (SQLite raises past that)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(TrackingIdConverter, "tracking_id")
register_converter(RowIdConverter, "row_id")

app_name = "scans"

urlpatterns = [
    path("", scan_views.scan_list, name="list"),
    path("header/", scan_views.scan_list_header, name="header"),
    path("add/", scan_views.scan_add, name="add"),
    path("add/confirm/", scan_views.scan_add_confirm, name="add-confirm"),
    path("add/edit/", scan_views.scan_add_edit, name="add-edit"),
    path("bulk/refresh/", scan_views.scans_bulk_refresh, name="bulk-refresh"),
    path("bulk/archive/", scan_views.scans_bulk_archive, name="bulk-archive"),
    path("bulk/archive/undo/", scan_views.scans_bulk_archive_undo, name="bulk-archive-undo"),
    path("bulk/restore/", scan_views.scans_bulk_restore, name="bulk-restore"),
    path("bulk/label/", scan_views.scans_bulk_label, name="bulk-label"),
    path("bulk/clear-label/", scan_views.scans_bulk_clear_label, name="bulk-clear-label"),
    path("healthz", health.healthz, name="healthz"),
    path("livez", health.livez, name="livez"),
    path("alerts/", alert_views.alert_list, name="alerts"),
    path("alerts/<row_id:alert_id>/resend/", alert_views.alert_resend, name="alert-resend"),
    path("alerts/settings/", alert_views.alert_settings, name="alert-settings"),
    path("alerts/settings/subscription/", alert_views.alert_subscription_update, name="alert-subscription"),
    path("alerts/mutes/", alert_views.alert_mute_create, name="alert-mute-create"),
    path("alerts/mutes/<row_id:mute_id>/delete/", alert_views.alert_mute_delete, name="alert-mute-delete"),
    path("alerts/snooze/", alert_views.alert_snooze_start, name="alert-snooze"),
    path("alerts/snooze/<row_id:snooze_id>/end/", alert_views.alert_snooze_end, name="alert-snooze-end"),
    path("scans/<tracking_id:tracking_id>/", scan_views.scan_detail, name="detail"),
    path("scans/<tracking_id:tracking_id>/refresh/", scan_views.scan_refresh, name="refresh"),
    path("scans/<tracking_id:tracking_id>/label/", scan_views.scan_label, name="label"),
    path("scans/<tracking_id:tracking_id>/archive/", scan_views.scan_archive, name="archive"),
    path("scans/<tracking_id:tracking_id>/restore/", scan_views.scan_restore, name="restore"),
    path("scans/<tracking_id:tracking_id>/mute/", scan_views.scan_mute, name="mute"),
    path("scans/<tracking_id:tracking_id>/unmute/", scan_views.scan_unmute, name="unmute"),
    path("scans/<tracking_id:tracking_id>/acknowledge/", triage_views.scan_acknowledge, name="acknowledge"),
    path("problems/", triage_views.problem_list, name="problems"),
    path("problems/acknowledge/", triage_views.problem_group_acknowledge, name="problem-group-acknowledge"),
    path("audit/", triage_views.audit_log, name="audit"),
]
