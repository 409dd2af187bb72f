"""URL routes of the scans app."""

from django.urls import path, re_path

from scans import views

app_name = "scans"

urlpatterns = [
    path("", views.scan_list, name="list"),
    path("add/", views.scan_add, name="add"),
    path("bulk/", views.scan_bulk, name="bulk"),
    path("healthz", views.healthz, name="healthz"),
    path("alerts/", views.alert_list, name="alerts"),
    path("alerts/<int:alert_id>/resend/", views.alert_resend, name="alert-resend"),
    path("alerts/settings/", views.alert_settings, name="alert-settings"),
    path("scans/<str:tracking_id>/", views.scan_detail, name="detail"),
    re_path(
        r"^scans/(?P<tracking_id>[^/]+)/(?P<action>refresh|archive|restore|label|mute|unmute)/$",
        views.scan_action,
        name="action",
    ),
]
