"""With the database unreachable a page is a friendly, styled 500 page, not Django's bare "Server Error (500)".

The database is made unreachable for real: on PostgreSQL the connection goes through tests/tcp_proxy.py refusing
every connection, on SQLite the database file's folder does not exist.
"""

from __future__ import annotations

import pytest
from django.db import connections
from django.template import engines

from tests.helpers import page_text, parse_html
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def database_down(tmp_path):
    """The default database refuses every new connection until the test ends."""
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    proxy = None
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = str(tmp_path / "no-such-folder" / "db.sqlite3")
    else:
        proxy = TcpProxy(saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 5432)).start()
        proxy.refuse()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)
    if proxy is not None:
        proxy.stop()


@pytest.fixture
def logged_in(client, django_user_model):
    # The session then has to be read from the database on the next request.
    client.force_login(django_user_model.objects.create_user("ops", password="pw-ops-1"))
    client.raise_request_exception = False
    return client


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/", "/alerts/", "/scans/some-scan/"])
def test_a_page_whose_database_is_down_gets_the_styled_500_page(settings, logged_in, database_down, path):
    settings.DEBUG = False

    response = logged_in.get(path)

    assert response.status_code == 500
    text = page_text(response)
    assert "Something went wrong on our side" in text
    assert "Your data is safe" in text
    assert "Server Error (500)" not in text
    assert parse_html(response).find("style") is not None  # styled, without needing the static files


def test_the_500_page_renders_with_no_context_at_all():
    # Django's handler500 renders the template with an empty context: nothing in it may need a request or the DB.
    html = engines["django"].from_string(open_500_template()).render({})

    assert "Try again" in html


def open_500_template() -> str:
    from django.conf import settings

    return (settings.BASE_DIR / "templates" / "500.html").read_text()
