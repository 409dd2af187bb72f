"""URL routes of the scans app."""

from django.urls import path, re_path

from scans.views import alerts as alert_views
from scans.views import health
from scans.views import scans as scan_views

app_name = "scans"

urlpatterns = [
    path("", scan_views.scan_list, name="list"),
    path("add/", scan_views.scan_add, name="add"),
    path("bulk/", scan_views.scan_bulk, name="bulk"),
    path("healthz", health.healthz, name="healthz"),
    path("alerts/", alert_views.alert_list, name="alerts"),
    path("alerts/<int:alert_id>/resend/", alert_views.alert_resend, name="alert-resend"),
    path("alerts/settings/", alert_views.alert_settings, name="alert-settings"),
    path("scans/<str:tracking_id>/", scan_views.scan_detail, name="detail"),
    re_path(
        r"^scans/(?P<tracking_id>[^/]+)/(?P<action>refresh|archive|restore|label|mute|unmute)/$",
        scan_views.scan_action,
        name="action",
    ),
]
