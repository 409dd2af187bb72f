"""Saving per-row values of many rows at once, without Django's bulk_update."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, models, router


def update_each(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Save `fields` of each row by primary key: one UPDATE statement, compiled once, run for every row.

    Django's bulk_update builds one CASE WHEN per field and row and resolves each as an expression: about 4 ms of
    CPU per changed scan, most of a refresh worker's time when a fifth of each batch has news. Here the rows go to
    the driver with executemany, which PostgreSQL's driver sends in one pipeline. Like bulk_update, no save()
    and no signals; the fields' own conversions to the database apply.
    """
    if not rows:
        return
    model = type(rows[0])
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    columns = [model._meta.get_field(name) for name in fields]
    pk = model._meta.pk
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
    statement = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(pk.column)} = %s"
    params = [
        [*(field.get_db_prep_save(getattr(row, field.attname), connection) for field in columns), row.pk]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(statement, params)
