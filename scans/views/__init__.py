"""Views of the scans app: scan pages and operator actions (scans.py), alerts (alerts.py), health (health.py)."""
