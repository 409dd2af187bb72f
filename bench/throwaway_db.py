"""A throw-away PostgreSQL database for the benchmark and chaos scripts; the developer's database is never used."""

from __future__ import annotations

import uuid


def create_postgres_database(admin_url: str, prefix: str) -> tuple[str, str]:
    """Create an empty database next to `admin_url`; return (its name, its URL)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_postgres_database(admin_url: str, name: str) -> None:
    """Drop the database, closing Django's connections to it first."""
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
