"""Development-only tooling: the Protecto simulator, the demo data and the `make run` process runner.

This package is never part of the production image (.dockerignore keeps it out) and is not a Django app: the
product (`scans/`, `dashboard/`, `protecto/`) never imports it. It exists so the dashboard can be run and tested
on a machine that cannot reach a real Protecto tenant.
"""
