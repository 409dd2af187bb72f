"""The Protecto client's bounds over real HTTP: answer size, whole-attempt deadline, redirects, and the longest a
call can take (`worst_case_seconds()`), against the simulator's drip, huge and redirect switches and a raw
listener for answers no well-behaved server sends."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from demo.simulator import ProtectoSimulator
from protecto import ProtectoBadAnswer, ProtectoClient, ProtectoError, ProtectoUnavailable
from tests.simulator_fixtures import fast_config

Respond = Callable[[socket.socket, threading.Event], None]


def client_for(url: str, **options: object) -> ProtectoClient:
    """A client for `url` with the simulator's token and test-sized settings; `options` override them."""
    settings = {"base_url": url, "token": "simulator-token", "timeout": 5, "backoff": 0.01, "max_retries": 0}
    settings.update(options)
    return ProtectoClient(**settings)  # type: ignore[arg-type]


def run_within(seconds: float, call: Callable[[], object]) -> tuple[object, float]:
    """Run `call` in a thread; fail if it has not ended after `seconds`. Returns (result or exception, elapsed).

    A thread, so that a broken bound fails the test promptly instead of holding it for minutes.
    """
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # handed back to the test, which asserts on it
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the call was still running after {seconds} s"
    return outcome[0], time.monotonic() - started


class RawServer:
    """A listener that reads each HTTP request and then lets `respond` write whatever bytes it likes."""

    def __init__(self, respond: Respond) -> None:
        self._respond = respond
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so the accept loop notices a stop
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self._respond(conn, self._stopped)


@pytest.fixture
def second_simulator() -> Iterator[ProtectoSimulator]:
    """Another simulator, standing in for a host a redirect points to."""
    with ProtectoSimulator(fast_config()) as sim:
        yield sim


# --- size --------------------------------------------------------------------------------------------------------


def test_an_answer_over_the_limit_is_refused_and_not_retried(simulator):
    simulator.configure(huge_bytes=3_000_000)
    client = client_for(simulator.url, max_answer_bytes=1_000_000, max_retries=3)

    with pytest.raises(ProtectoBadAnswer) as caught:
        client.fetch_status_batch(["scan-a"])

    assert "answer larger than 1 MB refused" in str(caught.value)
    assert caught.value.permanent is False
    assert client.requests_made == 1


def test_the_default_limit_is_named_in_megabytes(simulator):
    simulator.configure(huge_bytes=20_000_001)
    client = client_for(simulator.url)

    with pytest.raises(ProtectoError, match="answer larger than 20 MB refused"):
        client.fetch_status_batch(["scan-a"])


def test_an_answer_under_the_limit_is_read_whole(simulator):
    simulator.configure(huge_bytes=2_000_000)

    [report] = client_for(simulator.url).fetch_status_batch(["scan-a"])

    assert len(report.raw["error_msg"]) > 1_990_000


def test_a_declared_length_over_the_limit_is_refused_before_the_body_arrives():
    def declare_and_stall(conn: socket.socket, stopped: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n")
        stopped.wait(30)  # no body ever comes: reading any of it would wait out the deadline

    with RawServer(declare_and_stall) as server:
        client = client_for(server.url, deadline=10, max_answer_bytes=1_000_000)
        error, elapsed = run_within(5, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoBadAnswer)
    assert "answer larger than 1 MB refused" in str(error)
    assert elapsed < 2


def test_an_endless_answer_is_refused_once_it_passes_the_limit():
    def stream_forever(conn: socket.socket, stopped: threading.Event) -> None:
        # Chunked, so no Content-Length gives the size away: only counting while reading can stop it.
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        while not stopped.is_set():
            conn.sendall(chunk)

    with RawServer(stream_forever) as server:
        client = client_for(server.url, deadline=30, max_answer_bytes=2_000_000)
        error, _ = run_within(10, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoBadAnswer)
    assert "answer larger than 2 MB refused" in str(error)


def test_a_compressed_answer_is_limited_by_its_decoded_size():
    # 20 MB of spaces gzip to about 20 kB: under the limit on the wire, far over it once decoded.
    bomb = gzip.compress(b" " * 20_000_000)

    def send_bomb(conn: socket.socket, stopped: threading.Event) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        conn.sendall(head.encode() + bomb)

    with RawServer(send_bomb) as server:
        client = client_for(server.url, max_answer_bytes=1_000_000)
        error, _ = run_within(10, lambda: client.fetch_status_batch(["scan-a"]))

    assert len(bomb) < 1_000_000
    assert isinstance(error, ProtectoBadAnswer)
    assert "answer larger than 1 MB refused" in str(error)


# --- deadline ----------------------------------------------------------------------------------------------------


def test_an_answer_dripped_one_byte_a_second_fails_at_the_deadline(simulator):
    simulator.configure(drip_seconds=1)
    client = client_for(simulator.url, deadline=2, timeout=10)

    error, elapsed = run_within(6, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoUnavailable)
    assert "no complete answer within the 2 s deadline" in str(error)
    assert 1.9 <= elapsed < 4


def test_a_body_dripped_after_prompt_headers_fails_at_the_deadline():
    def headers_then_drip(conn: socket.socket, stopped: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        while not stopped.wait(0.2):
            conn.sendall(b" ")

    with RawServer(headers_then_drip) as server:
        client = client_for(server.url, deadline=1, timeout=10)
        error, elapsed = run_within(5, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoUnavailable)
    assert "deadline" in str(error)
    assert elapsed < 2.5


def test_a_slow_answer_that_completes_within_the_deadline_is_used(simulator):
    simulator.add_scan("scan-a", status="IN-PROGRESS")
    simulator.configure(drip_seconds=0.001)

    [report] = client_for(simulator.url, deadline=20).fetch_status_batch(["scan-a"])

    assert report.status == "IN-PROGRESS"


def test_no_deadline_watcher_outlives_its_call(simulator, protecto_client):
    for _ in range(5):
        protecto_client.fetch_status_batch(["scan-a"])

    deadline = time.monotonic() + 2
    while any(thread.name == "protecto-deadline" for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "a deadline watcher thread is still running"
        time.sleep(0.01)


# --- redirects ---------------------------------------------------------------------------------------------------


def test_a_redirect_is_refused_without_contacting_its_target(simulator, second_simulator):
    port = second_simulator.url.rsplit(":", 1)[1]
    simulator.configure(redirect_url=f"{second_simulator.url}/data-scan-status?next=elsewhere")
    client = client_for(simulator.url, max_retries=3)

    with pytest.raises(ProtectoBadAnswer) as caught:
        client.fetch_status_batch(["scan-a"])

    message = str(caught.value)
    assert caught.value.status_code == 302 and caught.value.permanent is False
    assert "HTTP 302" in message and f"to 127.0.0.1:{port}" in message
    assert "elsewhere" not in message
    assert client.requests_made == 1
    # The token never reached the other host: it was not contacted at all.
    assert second_simulator.request_count == 0


def test_a_redirect_to_a_hostile_location_gives_a_short_message(simulator):
    simulator.configure(redirect_url="http://" + "a" * 5000 + ".example/")

    with pytest.raises(ProtectoBadAnswer) as caught:
        client_for(simulator.url).fetch_status_batch(["scan-a"])

    assert len(str(caught.value)) < 300
    assert "a" * 101 not in str(caught.value)


# --- the longest a call can take ---------------------------------------------------------------------------------


def test_the_worst_case_at_the_refresh_defaults_is_about_two_minutes():
    client = ProtectoClient(base_url="http://127.0.0.1:1", token="t", deadline=30, max_retries=3, backoff=0.5)

    assert 120 <= client.worst_case_seconds() <= 130


def test_a_server_that_always_hangs_is_given_up_within_the_worst_case(simulator):
    simulator.configure(hang_rate=1.0, hang_seconds=30)
    client = client_for(simulator.url, deadline=0.5, timeout=10, max_retries=2, backoff=0.05)
    worst = client.worst_case_seconds()

    error, elapsed = run_within(worst + 2, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoUnavailable)
    assert elapsed <= worst
    assert client.requests_made == 3


def test_a_retry_after_too_long_for_the_worst_case_ends_the_call_at_once(simulator):
    simulator.configure(rate_limit_rate=1.0, retry_after=600)
    client = client_for(simulator.url, deadline=1, max_retries=3, max_retry_after=3600)
    worst = client.worst_case_seconds()

    error, elapsed = run_within(worst + 2, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoUnavailable) and error.status_code == 429
    assert "would not fit" in str(error)
    assert elapsed <= worst
    assert client.requests_made == 1


def test_a_retry_after_is_waited_for_while_another_attempt_still_fits(simulator):
    simulator.configure(rate_limit_rate=1.0, retry_after=1.5)
    # worst case: 4 attempts x (0.5 s + 0.5 s allowance) = about 4 s; a 1.5 s wait plus a 0.5 s attempt fits
    # after the first and second attempts (at 0 s and 1.5 s), not after the third (at 3 s).
    client = client_for(simulator.url, deadline=0.5, max_retries=3, max_retry_after=60)
    worst = client.worst_case_seconds()

    error, elapsed = run_within(worst + 2, lambda: client.fetch_status_batch(["scan-a"]))

    assert isinstance(error, ProtectoUnavailable)
    assert client.requests_made == 3
    assert elapsed <= worst


@pytest.mark.parametrize("options", [{"deadline": 0}, {"deadline": -1}, {"max_answer_bytes": 0}])
def test_bounds_that_would_refuse_everything_are_refused(options):
    with pytest.raises(ValueError):
        ProtectoClient(base_url="http://127.0.0.1:1", token="t", **options)
