"""The simulator on a real port: HTTP server and handler, routing, the `/_sim/` control endpoints, start/stop."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from demo.simulator.config import SimulatorConfig, is_number
from demo.simulator.faults import Reply, error_body, pad_reply, redirect_reply
from demo.simulator.scans import aware
from demo.simulator.state import Clock, SimulatorState

_MAX_BODY_BYTES = 1_000_000
_INVALID_TOKEN = "Invalid or expired token"


class ProtectoSimulator(SimulatorState):
    """A thread-safe, in-process Protecto simulator; start() serves it on a real port in a daemon thread."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        state_file: Path | str | None = None,
    ) -> None:
        super().__init__(config, clock=clock, state_file=state_file)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> ProtectoSimulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self, host: str, port: int, listener: socket.socket | None = None) -> _Server:
        if self._server is not None:
            raise RuntimeError("the simulator is already serving")
        self._stopping.clear()
        self._server = _Server((host, port), self, listener)
        return self._server

    def start(self, host: str = "127.0.0.1", port: int = 0) -> ProtectoSimulator:
        """Serve in a daemon thread (port 0 picks a free port; see .url) and return self."""
        server = self._bind(host, port)
        # A short poll interval keeps stop() quick, which matters when every test starts its own simulator.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="protecto-simulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        on_ready: Callable[[str], None] | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        """Serve in the calling thread until stop() is called from elsewhere or KeyboardInterrupt.

        With `listener` (a socket already bound, e.g. handed over by the `make run` runner) host and port are
        ignored: the simulator answers on that socket.
        """
        server = self._bind(host, port, listener)
        try:
            if on_ready is not None:
                on_ready(self.url)
            server.serve_forever(poll_interval=0.2)
        finally:
            self._stopping.set()
            server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop serving; answers still waiting out a latency or a hang are dropped."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join(timeout=5)
            server.server_close()
            self._server = None
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL being served, e.g. http://127.0.0.1:41234."""
        if self._server is None:
            raise RuntimeError("the simulator is not serving; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_while_serving(self, seconds: float) -> bool:
        """Wait up to `seconds`; True if the simulator was stopped meanwhile (the answer is then dropped)."""
        return self._stopping.wait(seconds)

    # --- routing --------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Work out the reply to one HTTP request; sleeping and writing are left to the HTTP handler."""
        path = urlsplit(raw_path).path
        if path == "/_sim" or path.startswith("/_sim/"):
            return self._handle_control(method, path, headers, body)
        self.count_api_request()
        config = self.config
        if config.redirect_url:
            # A redirecting gateway answers before anything checks the token or the body.
            reply = redirect_reply(config.redirect_url)
        else:
            reply = self._handle_api(method, path, headers, body, config)
        if config.huge_bytes:
            pad_reply(reply, config.huge_bytes)
        reply.drip = config.drip_seconds
        return reply

    def _handle_api(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, config: SimulatorConfig
    ) -> Reply:
        if path not in config.status_paths and path not in config.submit_paths:
            return Reply(404, error_body(f"No such endpoint: {path[:100]}"))
        if method != "PUT":
            return Reply(405, error_body(f"{method} is not allowed here; use PUT"), headers={"Allow": "PUT"})
        if not self.check_api_token(headers):
            # Never echo the presented token, not even a wrong one: it may be a real secret sent to the wrong host.
            return Reply(401, error_body(_INVALID_TOKEN))
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return Reply(400, error_body("Request body is not valid JSON"))
        if path in config.status_paths:
            return self.answer_status_call(decoded, headers)
        return self.answer_submit_call(decoded, headers)

    # --- /_sim/ control endpoints ---------------------------------------------------------------------------

    def _handle_control(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        if not self.authorised(headers):
            return Reply(401, error_body(_INVALID_TOKEN))
        routes: dict[str, tuple[str, Callable[[Any], Any]]] = {
            "/_sim/state": ("GET", lambda _: self.state()),
            "/_sim/config": ("POST", self._control_config),
            "/_sim/scans": ("POST", self._control_scans),
            "/_sim/fail-next": ("POST", self._control_fail_next),
            "/_sim/reset-log": ("POST", self._control_reset_log),
        }
        if path not in routes:
            return Reply(404, error_body(f"No such control endpoint: {path[:100]}"))
        allowed, action = routes[path]
        if method != allowed:
            return Reply(
                405, error_body(f"{method} is not allowed here; use {allowed}"), headers={"Allow": allowed}
            )
        decoded = None
        if allowed == "POST":
            try:
                decoded = json.loads(body.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError):
                return Reply(400, error_body("Request body is not valid JSON"))
        try:
            result = action(decoded)
        except (ValueError, TypeError, KeyError) as exc:
            return Reply(400, error_body(str(exc)))
        return Reply(200, {"data": result, "success": "true", "error": {"message": ""}})

    def _control_config(self, decoded: Any) -> dict[str, Any]:
        if not isinstance(decoded, dict):
            raise ValueError("Body must be a JSON object of settings to change")
        if "token" in decoded:
            # The token guards the control endpoints themselves; changing it remotely would lock the caller out.
            raise ValueError("the token cannot be changed over HTTP")
        self.configure(**decoded)
        return self.state()

    def _control_scans(self, decoded: Any) -> dict[str, Any]:
        specs = [decoded] if isinstance(decoded, dict) else decoded
        if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
            raise ValueError("Body must be a JSON list of scan objects")
        prepared = [scan_kwargs(spec) for spec in specs]  # validate all before adding any
        with self._lock:
            added = [self.add_scan(tracking_id, **kwargs) for tracking_id, kwargs in prepared]
        return {"added": added}

    def _control_fail_next(self, decoded: Any) -> dict[str, Any]:
        if not isinstance(decoded, dict):
            raise ValueError('Body must be a JSON object like {"count": 2, "kind": "500"}')
        self.fail_next(decoded.get("count", 1), decoded.get("kind", "500"))
        return self.state()

    def _control_reset_log(self, _decoded: Any) -> dict[str, Any]:
        self.reset_log()
        return self.state()

    def log_request(self, method: str, path: str, reply: Reply) -> None:
        """Write one line about a finished request to stderr (never headers, so never the token)."""
        if self.config.quiet:
            return
        batch = f" batch={reply.batch}" if reply.batch is not None else ""
        outcome = "dropped" if reply.drop else str(reply.code)
        note = f" ({reply.note})" if reply.note else ""
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        sys.stderr.write(f"[simulator {stamp}] {method} {path[:100]}{batch} -> {outcome}{note}\n")


_SCAN_SPEC_FIELDS = {
    "tracking_id",
    "status",
    "submitted_at",
    "started_at",
    "ended_at",
    "error_msg",
    "data_source",
    "object_name",
    "data_samples",
    "pending_seconds",
    "running_seconds",
    "outcome",
}


def scan_kwargs(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Turn a JSON scan object from POST /_sim/scans into add_scan() arguments, validating types."""
    tracking_id = spec.get("tracking_id")
    if not isinstance(tracking_id, str):
        raise ValueError("each scan needs a tracking_id string")
    unknown = sorted(set(spec) - _SCAN_SPEC_FIELDS)
    if unknown:
        raise ValueError(f"unknown scan field(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {**_spec_times(spec), **_spec_scalars(spec)}
    if "object_name" in spec:
        names = spec["object_name"]
        if not isinstance(names, str) and not (
            isinstance(names, list) and all(isinstance(part, str) for part in names)
        ):
            raise ValueError("object_name must be a string or a list of strings")
        kwargs["object_name"] = names
    if "data_samples" in spec:
        if not isinstance(spec["data_samples"], list):
            raise ValueError("data_samples must be a list")
        kwargs["data_samples"] = spec["data_samples"]
    return tracking_id, kwargs


def _spec_times(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if "submitted_at" in spec and spec["submitted_at"] is None:
        kwargs["submitted_at"] = None  # explicitly blank, as add_scan(submitted_at=None)
    for name in ("submitted_at", "started_at", "ended_at"):
        value = spec.get(name)
        if value is None:
            continue
        try:
            kwargs[name] = aware(datetime.fromisoformat(str(value)))
        except ValueError:
            raise ValueError(f"{name} must be an ISO date-time, not {value!r}") from None
    return kwargs


def _spec_scalars(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for name in ("status", "error_msg", "data_source", "outcome"):
        if spec.get(name) is not None:
            if not isinstance(spec[name], str):
                raise ValueError(f"{name} must be a string")
            kwargs[name] = spec[name]
    for name in ("pending_seconds", "running_seconds"):
        if spec.get(name) is not None:
            if not is_number(spec[name]) or spec[name] < 0:
                raise ValueError(f"{name} must be a number of seconds, at least 0")
            kwargs[name] = float(spec[name])
    return kwargs


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default joins every handler thread on close, which would make stop() wait out a simulated hang.
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], simulator: ProtectoSimulator, listener: socket.socket | None = None
    ) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler, bind_and_activate=listener is None)
        if listener is not None:
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()
            listener.listen(self.request_queue_size)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (read timeouts in the tests) close their socket mid-answer; that is expected.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ProtectoSimulator/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm meets the client's delayed
        # ACK and every answer takes ~40 ms longer, which slows every test that polls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        # Replaced by ProtectoSimulator.log_request: one line per request, with the batch size, no client noise.
        return

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body this server does not take."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send(Reply(411, error_body("Send a Content-Length; chunked bodies are not supported")))
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY_BYTES:
            self._send(Reply(413 if length > 0 else 400, error_body("Bad or too large Content-Length")))
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        simulator = self.server.simulator
        body = self._read_body()
        if body is None:
            return
        reply = simulator.handle(self.command, self.path, self.headers, body)
        if reply.delay and simulator.wait_while_serving(reply.delay):
            reply = Reply(drop=True, note="stopped")
        # Logged before answering: a client that stops the simulator as soon as it has its answer still finds
        # the line in the log.
        simulator.log_request(self.command, self.path, reply)
        if reply.drop:
            self.close_connection = True
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        if reply.drip:
            self._drip(reply)
            return
        body = reply.body()
        self.send_response(reply.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, reply: Reply) -> None:
        """Send the whole answer, status line and headers included, one byte every `reply.drip` seconds."""
        # The answer is written into a buffer by the usual code first, so dripping cannot change its bytes.
        socket_writer, buffer = self.wfile, io.BytesIO()
        self.wfile = buffer
        try:
            self._send(dataclasses.replace(reply, drip=0.0))
        finally:
            self.wfile = socket_writer
        self.close_connection = True
        data = buffer.getvalue()
        for index in range(len(data)):
            self.wfile.write(data[index : index + 1])
            if index + 1 < len(data) and self.server.simulator.wait_while_serving(reply.drip):
                return  # stopped: drop the rest

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _dispatch
