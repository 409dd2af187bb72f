"""A small threaded TCP proxy that tests put in front of a real server to fault the network between us and it.

`TcpProxy(host, port)` listens on a free port of 127.0.0.1 and forwards every connection to the target. Its mode
decides what happens to traffic, the way real networks fail:

- `pass_through()` (the default): bytes flow both ways.
- `refuse()`: new connections are accepted and closed at once with a reset (SO_LINGER 0), as a server that is down
  answers; existing connections are reset too.
- `blackhole()`: connections are accepted and held, nothing is forwarded either way (a hung server or a dropped
  route); nothing is ever closed, so the client waits until its own timeout.
- `sever_silently()`: every existing connection stops forwarding without a FIN or RST, and new ones are held as in
  `blackhole()` (a NAT or firewall idle timeout, a failover behind a load balancer).
- `heal()`: new connections pass through again; connections that were severed stay dead (as after a real NAT drop),
  connections held by `blackhole()` start forwarding.

Used as a context manager (`with TcpProxy(host, port) as proxy:`) or with `start()` / `stop()`.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

PASS = "pass"
REFUSE = "refuse"
BLACKHOLE = "blackhole"
SEVERED = "severed"


def _reset(sock: socket.socket) -> None:
    """Close a socket with a reset instead of a FIN: what a port with nothing behind it answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """One proxied connection: the client's socket, the upstream socket, and whether it may still carry bytes."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        # A severed pair never forwards again, even after heal(): the far end's state is gone.
        self.severed = False
        self.closed = False


class TcpProxy:
    """A TCP proxy on 127.0.0.1 whose failure mode a test switches at any time (see the module docstring)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0

    # --- lifecycle
    def start(self) -> TcpProxy:
        """Listen on a free port and start accepting; returns self."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Stop accepting and close every connection (with a reset, so no client waits on a dead proxy)."""
        self._stopping.set()
        _close(self._listener)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._drop(pair, reset=True)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url_host(self) -> str:
        """`127.0.0.1:<port>`, for building URLs that go through the proxy."""
        return f"127.0.0.1:{self.port}"

    # --- modes
    def pass_through(self) -> None:
        """Forward bytes both ways on every connection that is not severed."""
        self.mode = PASS

    def heal(self) -> None:
        """Back to pass-through for new connections; severed connections stay dead."""
        self.mode = PASS

    def refuse(self) -> None:
        """Reset every connection, existing and new."""
        self.mode = REFUSE
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair, reset=True)

    def blackhole(self) -> None:
        """Hold every connection open and forward nothing either way."""
        self.mode = BLACKHOLE

    def sever_silently(self) -> None:
        """Stop forwarding on every existing connection without closing it; hold new connections silently."""
        with self._lock:
            for pair in self._pairs:
                pair.severed = True
            self.mode = SEVERED

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> None:
        """Block until the proxy has accepted `count` open connections (the kernel accepts before we do)."""
        deadline = time.monotonic() + timeout
        while self.connection_count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxy holds {self.connection_count} connections, expected {count}")
            time.sleep(0.01)

    @property
    def connection_count(self) -> int:
        """How many client connections the proxy holds now (open, forwarding or not)."""
        with self._lock:
            return sum(1 for pair in self._pairs if not pair.closed)

    # --- internals
    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == REFUSE:
                _reset(client)
                continue
            pair = _Pair(client)
            # A connection that arrives during a silent cut never reaches the server, even after heal().
            pair.severed = self.mode == SEVERED
            with self._lock:
                self._pairs.append(pair)
            self._spawn(self._serve, pair)

    def _forwarding(self, pair: _Pair) -> bool:
        return self.mode == PASS and not pair.severed

    def _serve(self, pair: _Pair) -> None:
        """Connect upstream lazily (a held connection never touches the server) and pump bytes while allowed."""
        while not (pair.closed or self._stopping.is_set()):
            if not self._forwarding(pair):
                self._stopping.wait(0.05)
                continue
            if pair.upstream is None:
                try:
                    pair.upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    self._drop(pair, reset=True)
                    return
            if not self._pump(pair):
                self._drop(pair, reset=False)
                return

    def _pump(self, pair: _Pair) -> bool:
        """Move whatever is readable for up to 0.1 s; False when either side closed."""
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(pair.client, selectors.EVENT_READ, pair.upstream)
                selector.register(pair.upstream, selectors.EVENT_READ, pair.client)
            except (ValueError, OSError):
                return False
            for key, _ in selector.select(timeout=0.1):
                # Re-check the mode: bytes read after a cut began must not be delivered.
                if not self._forwarding(pair):
                    return True
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    return False
                if not data:
                    return False
                try:
                    key.data.sendall(data)
                except OSError:
                    return False
        return True

    def _drop(self, pair: _Pair, *, reset: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        close = _reset if reset else _close
        close(pair.client)
        if pair.upstream is not None:
            close(pair.upstream)
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
