"""How `make run` handles processes: the ports it reserves, the children it starts, waits for and stops."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

STOP_GRACE_SECONDS = 10
LEFTOVER_GRACE_SECONDS = 2


class RunError(Exception):
    """The dashboard cannot be (or stay) started; the message says why in one line."""


@dataclass
class Child:
    """A process the runner started and must stop; `stop_last`: only once the others have stopped."""

    name: str
    process: subprocess.Popen
    stop_last: bool = False


def reserve_port(host: str, port: int, *, hint: str, what: str = "") -> socket.socket:
    """Bind and listen on host:port now, and return the socket; RunError in one line when it is taken.

    The socket is handed to the child that serves the port (gunicorn's fd://, the simulator's --fd). Holding
    it from the start means that nothing can take the port between this check and the child's start, and that
    whatever answers on the port later is our child, never someone else's server.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise RunError(f"cannot listen on {host}: {exc.strerror}") from None
    listener = socket.socket(family, kind, proto)
    # As every server does: a restart must not wait for the last run's closed connections to time out.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        label = f"the {what}'s port {host}:{port}" if what else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise RunError(f"{label} is already in use; stop what runs there or pick another: {hint}") from None
        raise RunError(f"cannot listen on {label}: {exc.strerror or exc}") from None
    return listener


def url_host(host: str) -> str:
    """The host part of a URL that reaches a server listening on `host` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def start_child(
    children: list[Child],
    name: str,
    command: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    stop_last: bool = False,
) -> None:
    """Start one child in a process group of its own, and remember it for stopping."""
    # Its own group lets stop_all() reach the child's children too (gunicorn's workers outlive a killed master),
    # and a terminal's Ctrl-C reaches only the runner, which then stops everything in order.
    process = subprocess.Popen(
        command, cwd=cwd, env={**os.environ, **(env or {})}, process_group=0, pass_fds=tuple(pass_fds)
    )
    children.append(Child(name, process, stop_last))


def first_exited(children: list[Child]) -> Child | None:
    """The first child found to have exited, or None while all run."""
    return next((child for child in children if child.process.poll() is not None), None)


def wait_for_http(
    url: str, children: list[Child], timeout: float, *, headers: Mapping[str, str] | None = None
) -> None:
    """Wait until `url` gives any HTTP answer; RunError if a child dies first or nothing answers in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = first_exited(children)
        if dead is not None:
            raise RunError(f"the {dead.name} process exited with status {dead.process.returncode}")
        try:
            requests.get(url, headers=dict(headers or {}), timeout=2, allow_redirects=False)
        except requests.RequestException:
            time.sleep(0.2)
            continue
        return
    raise RunError(f"nothing answered at {url} within {timeout:.0f}s")


def _signal_group(child: Child, signum: int) -> bool:
    """Send `signum` to the child's whole process group; False when nothing is left in it."""
    try:
        os.killpg(child.process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def _terminate_and_wait(children: list[Child], *, prog: str, deadline: float) -> None:
    # The leader only: gunicorn and Celery stop their own workers in order. A SIGTERM to the whole group at once
    # kills Celery's pool processes under it, and the worker then spends its grace period replacing them.
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{prog}: the {child.name} process ignored SIGTERM; killing it", file=sys.stderr)


def stop_all(children: list[Child], *, prog: str, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each child, wait for it, then stop what its process group still holds; kill what lingers.

    Children marked stop_last (the simulator, which the worker may be polling) go once the others are gone.
    """
    # A second Ctrl-C must not cut the clean-up short and leave children behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline = time.monotonic() + grace
    _terminate_and_wait([child for child in children if not child.stop_last], prog=prog, deadline=deadline)
    _terminate_and_wait([child for child in children if child.stop_last], prog=prog, deadline=deadline)
    # Leftovers (a group whose leader died, or a leader that ignored SIGTERM) get a moment, then SIGKILL.
    for child in children:
        _signal_group(child, signal.SIGTERM)
    leftovers_deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while any(_signal_group(child, 0) for child in children) and time.monotonic() < leftovers_deadline:
        time.sleep(0.1)
    for child in children:
        _signal_group(child, signal.SIGKILL)
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()
