"""python -m demo.run (what `make run` runs): the whole dashboard on this machine, in the foreground.

In order: the web port (and in demo mode the simulator's port) are taken at once, before anything else, so a
busy port stops the start with one line and nothing started; demo mode when no Protecto API is configured;
var/, the broker folders and a local secret key; then Django: migrate, collectstatic, a first login; in demo
mode the Protecto simulator (its scans kept in var/, so a restart never rewinds them) and the demo scans; then
the web server (gunicorn), a Celery worker, Celery beat and the watchdog (which tells when the poller stops,
even when Celery and the broker are down). Once the web server answers, a box shows the address and the login;
in demo mode a new scan then arrives every 20-40 s. Ctrl-C or SIGTERM stops every child. If one child dies the
others are stopped too and the runner exits non-zero, so a half-running dashboard never looks healthy.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import NoReturn

from demo.processes import (
    Child,
    RunError,
    first_exited,
    reserve_port,
    start_child,
    stop_all,
    url_host,
    wait_for_http,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m demo.run"
DEFAULT_PORT = 8000
DEFAULT_SIMULATOR_PORT = 8765
WEB_WAIT_SECONDS = 60
SIMULATOR_WAIT_SECONDS = 20
_TRUE = {"1", "true", "yes", "on"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message names the option, and --help is there for the rest.
        self.exit(2, f"{self.prog}: {message}\n")


def _port_default(parser: argparse.ArgumentParser, environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        parser.error(f"{name} must be a port number between 1 and 65535, not {raw!r}")
    return int(raw)


def _seconds_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be MIN,MAX seconds (e.g. 20,40), not {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"must be MIN,MAX seconds with 0 < MIN <= MAX, not {text!r}")
    return low, high


def parse_options(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """The options; --port and --simulator-port default to $PORT and $SIMULATOR_PORT (what `make run` passes)."""
    environ = os.environ if environ is None else environ
    parser = _Parser(prog=PROG, description="Run web, worker, beat (and the demo simulator).")
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="Address the web server listens on.")
    port = _port_default(parser, environ, "PORT", DEFAULT_PORT)
    add("--port", type=int, default=port, help=f"Port the web server listens on (default $PORT, else {port}).")
    simulator_port = _port_default(parser, environ, "SIMULATOR_PORT", DEFAULT_SIMULATOR_PORT)
    add(
        "--simulator-port",
        type=int,
        default=simulator_port,
        help=f"Port of the demo's Protecto simulator (default $SIMULATOR_PORT, else {simulator_port}).",
    )
    add("--web-workers", type=int, default=2, help="gunicorn worker processes.")
    add("--access-log", action="store_true", help="Log one line per web request (off: the page polls often).")
    add(
        "--demo-every",
        type=_seconds_range,
        default=(20.0, 40.0),
        metavar="MIN,MAX",
        help="In demo mode, add a new scan every MIN to MAX seconds (default 20,40).",
    )
    options = parser.parse_args(argv)
    for name in ("port", "simulator_port"):
        if not 0 < getattr(options, name) < 65536:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 65535, not {getattr(options, name)}")
    if options.web_workers < 1:
        parser.error(f"--web-workers must be at least 1, not {options.web_workers}")
    return options


def demo_mode_wanted(environ: Mapping[str, str]) -> bool:
    """Whether this start is a demo: PROTECTO_API_URL unset (blank counts as unset, as in dashboard/env.py).

    RunError when DEMO_MODE is switched on by hand while PROTECTO_API_URL is set: the demo would register its
    scans with that server, which is not the simulator this runner starts.
    """
    api_url = environ.get("PROTECTO_API_URL", "").strip()
    if api_url and environ.get("DEMO_MODE", "").strip().lower() in _TRUE:
        raise RunError(
            f"DEMO_MODE=true with PROTECTO_API_URL={api_url}: the demo scans would go to that server; "
            "unset one of the two"
        )
    return not api_url


def enable_demo_mode_if_no_api(environ: MutableMapping[str, str], *, quiet: bool = False) -> bool:
    """Turn demo mode on when PROTECTO_API_URL is unset; the one place that does. True if it did."""
    if environ.get("PROTECTO_API_URL", "").strip():
        return False
    environ["DEMO_MODE"] = "true"
    if not quiet:
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


def setup_django(*, migrate: bool = True) -> None:
    """Load the settings (a bad one stops here, in one line); then migrate and collect static files."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise RunError(f"settings: {exc}") from None
    if not migrate:
        return
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    # Django lists every migration it applies (about 35 lines on a fresh database); one line says enough.
    call_command("migrate", interactive=False, verbosity=0)
    print(f"Database: {len(pending)} migrations applied." if pending else "Database: up to date.")
    call_command("collectstatic", interactive=False, verbosity=0)


def start_demo(children: list[Child], listener_fd: int) -> None:
    """Start the simulator on the reserved port, wait until it answers, and add the demo scans once."""
    from django.conf import settings

    from demo.seed import DemoError, seed_demo

    state_file = Path(settings.VAR_DIR) / "simulator-state.json"
    print(f"Demo mode: the Protecto simulator on port {settings.SIMULATOR_PORT}, its scans kept in {state_file}")
    command = [sys.executable, "-m", "demo.simulator", "--fd", str(listener_fd), "--quiet"]
    command += ["--state-file", str(state_file)]
    # The simulator must accept exactly the token the dashboard presents, whatever SIMULATOR_TOKEN says.
    env = {"SIMULATOR_TOKEN": settings.PROTECTO_AUTH_TOKEN}
    start_child(children, "simulator", command, cwd=REPO_ROOT, env=env, pass_fds=(listener_fd,), stop_last=True)
    headers = {"Authorization": f"Bearer {settings.PROTECTO_AUTH_TOKEN}"}
    wait_for_http(f"{settings.PROTECTO_API_URL}/_sim/state", children, SIMULATOR_WAIT_SECONDS, headers=headers)
    try:
        seed_demo()
    except DemoError as exc:
        raise RunError(f"demo scans: {exc}") from None


def start_dashboard(children: list[Child], options: argparse.Namespace, listener_fd: int) -> None:
    """Start gunicorn on the reserved web port, a Celery worker, Celery beat and the watchdog."""
    from django.conf import settings

    python = sys.executable
    quiet = settings.LOG_LEVEL != "DEBUG"
    # gunicorn's INFO lines (booting, listening) repeat what the box at the end says; its warnings still show.
    web = [python, "-m", "gunicorn", "dashboard.wsgi", "--bind", f"fd://{listener_fd}", "--no-control-socket"]
    web += ["--workers", str(options.web_workers), "--log-level", "warning" if quiet else "debug"]
    if options.access_log:
        web += ["--access-logfile", "-"]
    start_child(children, "web", web, cwd=REPO_ROOT, pass_fds=(listener_fd,))
    # -q: no banners (about 30 lines); the log level is the dashboard's own. Celery's 8-line warning about root
    # or sudo-group users is aimed at pickle, which this project never accepts (JSON only); on a developer's
    # machine it would greet every start.
    quiet_root = {"PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges"}
    celery = [python, "-m", "celery", "-A", "dashboard", "-q"]
    loglevel = ["--loglevel", settings.LOG_LEVEL]
    worker = [*celery, "worker", *loglevel, "--concurrency", "2"]
    start_child(children, "worker", worker, cwd=REPO_ROOT, env=quiet_root)
    schedule = ["--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME]
    start_child(children, "beat", [*celery, "beat", *loglevel, *schedule], cwd=REPO_ROOT, env=quiet_root)
    start_child(children, "watchdog", [python, "manage.py", "watchdog"], cwd=REPO_ROOT)


def supervise(options: argparse.Namespace, listeners: dict) -> int:
    """Start the children and watch them until Ctrl-C/SIGTERM (0) or until one of them dies (1)."""
    from django.conf import settings

    from demo.feed import DemoFeed
    from demo.login import login_box, login_ensure

    children: list[Child] = []
    feed = None
    try:
        login = login_ensure()
        if settings.DEMO_MODE:
            start_demo(children, listeners["simulator"].fileno())
        start_dashboard(children, options, listeners["web"].fileno())
        for listener in listeners.values():
            listener.close()  # the children hold the ports now; a dead child must not leave them taken
        url = f"http://{url_host(options.host)}:{options.port}/"
        wait_for_http(f"{url}login/", children, WEB_WAIT_SECONDS)
        print(login_box(login=login, url=url), flush=True)
        if settings.DEMO_MODE:
            feed = DemoFeed(every=options.demo_every).start()
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
        if feed is not None:
            feed.stop()
        stop_all(children, prog=PROG)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, start and supervise everything; the exit status says whether it ended cleanly."""
    options = parse_options(argv)
    # Ctrl-C and a plain `kill` both stop everything, also when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    listeners: dict = {}
    try:
        demo = demo_mode_wanted(os.environ)
        # Held from now until the children take them over: nothing else can take a port while we migrate.
        listeners["web"] = reserve_port(options.host, options.port, hint="make run PORT=<another port>")
        if demo:
            hint = "make run SIMULATOR_PORT=<another port>"
            listeners["simulator"] = reserve_port("127.0.0.1", options.simulator_port, hint=hint, what="simulator")
        # The settings (in this process and every child) read the ports the runner was given.
        os.environ.update(PORT=str(options.port), SIMULATOR_PORT=str(options.simulator_port))
        enable_demo_mode_if_no_api(os.environ)
        prepare_var(os.environ)
        setup_django()
        return supervise(options, listeners)
    except RunError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for listener in listeners.values():
            listener.close()


if __name__ == "__main__":
    sys.exit(main())
