"""One HTTP attempt, bounded in time and in size.

requests bounds each socket operation (the connect, one read) but never the attempt as a whole: a server that
drips one byte a second never trips a read timeout, and `response.content` reads an answer of any size into
memory. Here a `Deadline` shuts the attempt's connection down when its time is up, which ends whatever read is
blocked on it, and `read_capped` streams the body and stops as soon as it outgrows its limit.

The deadline finds the attempt's connection through the adapter `bounded_adapter()` returns: its connections
report themselves to the deadline active in their thread when they send a request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from contextvars import ContextVar
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

# Read size while streaming an answer: at most this much is ever read past the size limit.
CHUNK_BYTES = 64 * 1024
# After the deadline, how often to look again for a connection to cut (the attempt may still be connecting).
_RECHECK_SECONDS = 0.05

_active: ContextVar[Deadline | None] = ContextVar("protecto_deadline", default=None)


class DeadlinePassed(Exception):
    """The attempt's deadline passed while the answer was still arriving."""


class AnswerTooLarge(Exception):
    """The answer declared or streamed more bytes than the limit; nothing past limit + one chunk was read."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"answer too large (HTTP {status_code})")
        self.status_code = status_code


class Deadline:
    """A whole-attempt time limit: when it passes, the attempt's connection is shut down under it.

    Use as a context manager around one request in the thread that sends it. A watcher thread waits for the
    deadline; shutting the socket down wakes a read blocked on it (it sees the end of the stream), so no drip,
    however slow, can hold the attempt longer.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._connection: HTTPConnection | None = None
        self._watcher = threading.Thread(target=self._watch, name="protecto-deadline", daemon=True)

    def __enter__(self) -> Deadline:
        self._token = _active.set(self)
        self._watcher.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._finished.set()
        _active.reset(self._token)

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self._ends

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(self._ends - time.monotonic(), 0.0)

    def timeouts(self, connect: float, read: float) -> tuple[float, float]:
        """requests' (connect, read) timeouts, each cut to the time left, so neither can outlast the deadline."""
        left = max(self.remaining(), 0.001)
        return min(connect, left), min(read, left)

    def attach(self, connection: HTTPConnection) -> None:
        """Watch this connection: the attempt's request is about to go out on it."""
        with self._lock:
            self._connection = connection

    def _watch(self) -> None:
        if self._finished.wait(self.remaining()):
            return
        # The connection may not have its socket yet (still connecting, within a connect timeout already cut
        # to the deadline), so keep cutting until the attempt gives up.
        while not self._finished.is_set():
            self._cut()
            self._finished.wait(_RECHECK_SECONDS)

    def _cut(self) -> None:
        with self._lock:
            sock = getattr(self._connection, "sock", None)
        if isinstance(sock, socket.socket):
            # Already closed or never connected: nothing left to wake.
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also under TLS: ssl.SSLSocket.shutdown would drop its TLS state
                # under the reading thread's feet instead of just ending the stream.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def read_capped(response: requests.Response, *, limit: int, deadline: Deadline) -> bytearray:
    """The whole (decoded) body, streamed; AnswerTooLarge past `limit` bytes, DeadlinePassed past the deadline.

    A Content-Length above the limit is refused before any of the body is read.
    """
    declared = (response.headers.get("Content-Length") or "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(response.status_code)
    body = bytearray()
    for chunk in response.iter_content(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(response.status_code)
        if deadline.expired:
            # Normally the watcher has cut the connection by now; this catches a connection it could not see.
            raise DeadlinePassed
    return body


def bounded_adapter() -> HTTPAdapter:
    """A requests adapter whose connections report to the active Deadline, so it can cut them."""
    return _BoundedAdapter()


def _attach_to_active_deadline(connection: HTTPConnection) -> None:
    deadline = _active.get()
    if deadline is not None:
        deadline.attach(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_to_active_deadline(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_to_active_deadline(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _BoundedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.ProxyManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # A SOCKS manager brings its own pool classes; for those only read_capped's check bounds the attempt.
        if type(manager) is urllib3.ProxyManager:
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager
