"""HEARTBEAT_URL: a real local HTTP listener stands in for a Healthchecks-style monitor."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scans.heartbeat import heartbeat_ping
from tests.factories import make_refresh_run
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db

TOKEN = "protecto-secret-token-123"


class Monitor:
    """A local HTTP server recording each request (method, path, headers); answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.status = 200
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                monitor.requests.append(("GET", self.path, dict(self.headers)))
                self.send_response(monitor.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}/ping/4f1c2a"


@pytest.fixture
def monitor(settings):
    settings.PROTECTO_AUTH_TOKEN = TOKEN
    monitor = Monitor()
    settings.HEARTBEAT_URL = monitor.url()
    yield monitor
    monitor.server.shutdown()
    monitor.server.server_close()


def test_a_successful_cycle_pings_the_monitor_without_the_protecto_token(monitor):
    assert heartbeat_ping(run=make_refresh_run(ids_asked=5, ids_answered=5)) is True

    [(method, path, headers)] = monitor.requests
    assert (method, path) == ("GET", "/ping/4f1c2a")
    assert "Authorization" not in headers
    assert TOKEN not in repr(headers)


@pytest.mark.parametrize("outcome", ["failed", "auth_refused", "running", "abandoned"])
def test_a_cycle_that_did_not_succeed_sends_no_ping(monitor, outcome):
    assert heartbeat_ping(run=make_refresh_run(outcome=outcome)) is False
    assert monitor.requests == []


def test_without_a_heartbeat_url_nothing_is_sent(monitor, settings):
    settings.HEARTBEAT_URL = ""

    assert heartbeat_ping(run=make_refresh_run()) is False
    assert monitor.requests == []


def test_a_monitor_answering_an_error_is_logged_not_raised(monitor, caplog):
    monitor.status = 500

    assert heartbeat_ping(run=make_refresh_run()) is False
    assert "heartbeat ping to 127.0.0.1 answered HTTP 500" in caplog.text
    assert "4f1c2a" not in caplog.text  # the ping URL's path is the monitor's secret


def test_a_monitor_that_refuses_is_logged_not_raised(monitor, settings, caplog):
    with TcpProxy("127.0.0.1", monitor.port) as proxy:
        proxy.refuse()
        settings.HEARTBEAT_URL = monitor.url(proxy.port)

        assert heartbeat_ping(run=make_refresh_run()) is False
    assert "heartbeat ping to 127.0.0.1 failed: ConnectionError" in caplog.text


def test_a_monitor_that_hangs_holds_the_cycle_five_seconds_at_most(monitor, settings):
    with TcpProxy("127.0.0.1", monitor.port) as proxy:
        proxy.blackhole()
        settings.HEARTBEAT_URL = monitor.url(proxy.port)
        started = time.monotonic()

        assert heartbeat_ping(run=make_refresh_run()) is False

    assert 4.5 < time.monotonic() - started < 7
