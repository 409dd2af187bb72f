"""python -m demo.run (what `make run` runs): the whole dashboard on this machine, in the foreground.

In order: demo mode when no Protecto API is configured; var/, the broker folders and a local secret key; then
Django: migrate, collectstatic, a first login; in demo mode the Protecto simulator and the demo scans; then the
web server (gunicorn), a Celery worker, Celery beat and the watchdog (which tells when the poller stops, even when
Celery and the broker are down). Ctrl-C or SIGTERM stops every child. If one child dies
the others are stopped too and the runner exits non-zero, so a half-running dashboard never looks healthy.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m demo.run"
STOP_GRACE_SECONDS = 10
PORT_WAIT_SECONDS = 20


class RunError(Exception):
    """The dashboard cannot be (or stay) started; the message says why in one line."""


@dataclass
class Child:
    """A process the runner started and must stop."""

    name: str
    process: subprocess.Popen


def parse_options(argv: Sequence[str] | None) -> argparse.Namespace:
    """--host, --port and --web-workers."""
    parser = argparse.ArgumentParser(prog=PROG, description="Run web, worker, beat (and the demo simulator).")
    parser.add_argument("--host", default="127.0.0.1", help="Address the web server listens on.")
    parser.add_argument("--port", type=int, default=8000, help="Port the web server listens on.")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes.")
    options = parser.parse_args(argv)
    if not 0 < options.port < 65536:
        parser.exit(2, f"{PROG}: --port must be between 1 and 65535, not {options.port}\n")
    if options.web_workers < 1:
        parser.exit(2, f"{PROG}: --web-workers must be at least 1, not {options.web_workers}\n")
    return options


def enable_demo_mode_if_no_api(environ: MutableMapping[str, str]) -> bool:
    """Turn demo mode on when PROTECTO_API_URL is unset; the one place that does. True if it did."""
    # Blank counts as unset, as in dashboard/env.py.
    if environ.get("PROTECTO_API_URL", "").strip():
        return False
    environ["DEMO_MODE"] = "true"
    print("Demo mode on: PROTECTO_API_URL is unset, so the bundled Protecto simulator stands in for the API.")
    return True


def prepare_var(environ: Mapping[str, str]) -> Path:
    """Create VAR_DIR, the filesystem broker's folders and a local secret key, as dashboard/settings.py expects.

    Runs before the settings are imported: settings only read these, and stop start-up without a secret key.
    The paths are computed as settings compute them (VAR_DIR, else <repo>/var; "/celery-queue"; "/secret-key").
    """
    var_dir = Path(environ.get("VAR_DIR", "").strip() or REPO_ROOT / "var").resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    if not environ.get("REDIS_URL", "").strip():
        (var_dir / "celery-queue" / "control").mkdir(parents=True, exist_ok=True)
    key_file = var_dir / "secret-key"
    if not environ.get("SECRET_KEY", "").strip() and not key_file.exists():
        # O_EXCL: two runners starting at once must not overwrite each other's key (and its sessions).
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50) + "\n")
        print(f"Wrote a new local secret key to {key_file}")
    return var_dir


def setup_django() -> None:
    """Load the settings (a bad one stops here, in one line), migrate, collect static files, ensure a login."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise RunError(f"settings: {exc}") from None
    call_command("migrate", interactive=False, verbosity=1)
    call_command("collectstatic", interactive=False, verbosity=0)

    from demo.login import ensure_login

    ensure_login()


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _answers(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_child(
    children: list[Child], name: str, command: list[str], env: Mapping[str, str] | None = None
) -> None:
    """Start one child in the repository root, in a process group of its own, and remember it for stopping."""
    # Its own group lets stop_all() reach the child's children too (gunicorn's workers outlive a killed master),
    # and a terminal's Ctrl-C reaches only the runner, which then stops everything in order.
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, process_group=0)
    children.append(Child(name, process))


def wait_for_port(host: str, port: int, children: list[Child], timeout: float = PORT_WAIT_SECONDS) -> None:
    """Wait until something answers on host:port; RunError if a child dies first or nothing answers in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(host, port):
            return
        dead = first_exited(children)
        if dead is not None:
            raise RunError(f"the {dead.name} process exited with status {dead.process.returncode}")
        time.sleep(0.1)
    raise RunError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


def start_demo(children: list[Child]) -> None:
    """Start the simulator on SIMULATOR_PORT, wait for it, and add the demo scans."""
    from django.conf import settings

    from demo.seed import DemoError, seed_demo

    port = settings.SIMULATOR_PORT
    if not port_free("127.0.0.1", port):
        raise RunError(
            f"the simulator's port 127.0.0.1:{port} is in use; stop what runs there or set SIMULATOR_PORT"
        )
    print(f"Demo mode: starting the Protecto simulator on port {port}", flush=True)
    # The simulator must accept exactly the token the dashboard presents, whatever SIMULATOR_TOKEN says.
    command = [sys.executable, "-m", "demo.simulator", "--port", str(port)]
    start_child(children, "simulator", command, env={"SIMULATOR_TOKEN": settings.PROTECTO_AUTH_TOKEN})
    wait_for_port("127.0.0.1", port, children)
    try:
        seed_demo()
    except DemoError as exc:
        raise RunError(f"demo scans: {exc}") from None


def start_dashboard(children: list[Child], options: argparse.Namespace) -> str:
    """Start gunicorn, a Celery worker, Celery beat and the watchdog; return the web address."""
    from django.conf import settings

    python = sys.executable
    bind = f"{options.host}:{options.port}"
    web = [python, "-m", "gunicorn", "dashboard.wsgi", "--bind", bind, "--access-logfile", "-"]
    start_child(children, "web", [*web, "--workers", str(options.web_workers)])
    celery = [python, "-m", "celery", "-A", "dashboard"]
    start_child(children, "worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"])
    schedule = settings.CELERY_BEAT_SCHEDULE_FILENAME
    start_child(children, "beat", [*celery, "beat", "--loglevel", "INFO", "--schedule", schedule])
    start_child(children, "watchdog", [python, "manage.py", "watchdog"])
    return bind


def first_exited(children: list[Child]) -> Child | None:
    """The first child found to have exited, or None while all run."""
    return next((child for child in children if child.process.poll() is not None), None)


def _signal_group(child: Child, signum: int) -> bool:
    """Send `signum` to the child's whole process group; False when nothing is left in it."""
    try:
        os.killpg(child.process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def stop_all(children: list[Child]) -> None:
    """SIGTERM every child's process group, then kill what still runs after the grace period."""
    # A second Ctrl-C must not cut the clean-up short and leave children behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{PROG}: the {child.name} process ignored SIGTERM; killing it", file=sys.stderr)
    # Leftovers (a group whose leader died, or a leader that ignored SIGTERM) get until the deadline, then SIGKILL.
    while any(_signal_group(child, 0) for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in children:
        _signal_group(child, signal.SIGKILL)
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()


def supervise(options: argparse.Namespace) -> int:
    """Start the children and watch them until Ctrl-C/SIGTERM (0) or until one of them dies (1)."""
    from django.conf import settings

    children: list[Child] = []
    try:
        if settings.DEMO_MODE:
            start_demo(children)
        bind = start_dashboard(children, options)
        print(f"Dashboard on http://{bind}/  (Ctrl-C stops everything)", flush=True)
        while (dead := first_exited(children)) is None:
            time.sleep(0.5)
        print(
            f"{PROG}: the {dead.name} process stopped (exit status {dead.process.returncode}); stopping the rest",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
        return 0
    finally:
        stop_all(children)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, start and supervise everything; the exit status says whether it ended cleanly."""
    options = parse_options(argv)
    # Ctrl-C and a plain `kill` both stop everything, also when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not port_free(options.host, options.port):
            raise RunError(f"{options.host}:{options.port} is already in use; stop what runs there or pick --port")
        enable_demo_mode_if_no_api(os.environ)
        prepare_var(os.environ)
        setup_django()
        return supervise(options)
    except RunError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
