"""URL routes of the scans app."""

from django.urls import path

from scans import views

app_name = "scans"

urlpatterns = [
    path("", views.scan_list, name="list"),
    path("healthz", views.healthz, name="healthz"),
]
