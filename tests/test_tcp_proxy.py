"""The TCP proxy that other tests use to fault the network: each mode does to a connection what it promises."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from tests.tcp_proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo_server):
    with TcpProxy(*echo_server) as proxy:
        yield proxy


def _connect(proxy: TcpProxy, timeout: float = 1.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _echoes(sock: socket.socket, payload: bytes = b"ping") -> bool:
    """True when the payload comes back; False when nothing arrives before the socket's timeout."""
    sock.sendall(payload)
    try:
        return sock.recv(4096) == payload
    except TimeoutError:
        return False


def test_pass_through_forwards_both_ways(proxy):
    with _connect(proxy) as sock:
        assert _echoes(sock)


def test_refuse_resets_new_connections(proxy):
    proxy.refuse()
    # The reset may already arrive while connecting (a fast accept-and-reset) or only at the first read.
    with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
        sock.sendall(b"ping")
        sock.recv(4096)


def test_refuse_resets_existing_connections(proxy):
    with _connect(proxy) as sock:
        assert _echoes(sock)
        proxy.refuse()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.sendall(b"ping")
            assert sock.recv(4096) == b""


def test_blackhole_holds_connections_without_answering_or_closing(proxy):
    proxy.blackhole()
    with _connect(proxy, timeout=0.5) as sock:
        assert not _echoes(sock)


def test_silent_sever_stops_existing_connections_without_closing_them(proxy):
    with _connect(proxy, timeout=0.5) as sock:
        assert _echoes(sock)
        proxy.sever_silently()
        # No FIN and no RST: the read just times out, as after a NAT idle-timeout drop.
        assert not _echoes(sock)


def test_heal_lets_new_connections_through_but_severed_ones_stay_dead(proxy):
    with _connect(proxy, timeout=0.5) as old:
        assert _echoes(old)
        proxy.sever_silently()
        proxy.heal()
        assert not _echoes(old)
        with _connect(proxy) as new:
            assert _echoes(new)


def test_connections_opened_during_a_silent_cut_stay_dead_after_heal(proxy):
    proxy.sever_silently()
    with _connect(proxy, timeout=0.5) as during:
        proxy.wait_for_connections(1)
        proxy.heal()
        assert not _echoes(during)


def test_heal_after_blackhole_resumes_held_connections(proxy):
    proxy.blackhole()
    with _connect(proxy, timeout=2) as sock:
        proxy.heal()
        assert _echoes(sock)
