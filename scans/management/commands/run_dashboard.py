"""python manage.py run_dashboard: web server, Celery worker and beat (and the simulator in demo mode).

Everything runs in the foreground; Ctrl-C stops all of it. If one part dies, the others are stopped too, so a
half-running dashboard never looks healthy.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = "Run the whole dashboard on this machine: web, worker, beat, and the Protecto simulator in demo mode."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, **options) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError("--port must be between 1 and 65535")
        if _port_in_use(options["host"], options["port"]):
            raise CommandError(
                f"{options['host']}:{options['port']} is already in use; stop what runs there first"
            )
        # Ctrl-C and a plain `kill` both stop everything, also when started from a shell that ignores SIGINT.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        call_command("ensure_login", stdout=self.stdout)
        python = sys.executable
        manage = [python, str(settings.BASE_DIR / "manage.py")]
        celery = [python, "-m", "celery", "-A", "dashboard"]
        children: list[tuple[str, subprocess.Popen]] = []
        try:
            if settings.DEMO_MODE:
                self.stdout.write(f"Demo mode: starting the Protecto simulator on port {settings.SIMULATOR_PORT}")
                children.append(
                    ("simulator", _start([*manage, "protecto_simulator", "--port", str(settings.SIMULATOR_PORT)]))
                )
                _wait_for_port("127.0.0.1", settings.SIMULATOR_PORT, children)
                call_command("seed_demo", stdout=self.stdout)
            bind = f"{options['host']}:{options['port']}"
            gunicorn = [python, "-m", "gunicorn", "dashboard.wsgi", "--bind", bind, "--access-logfile", "-"]
            children.append(("web", _start([*gunicorn, "--workers", str(options["web_workers"])])))
            children.append(("worker", _start([*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"])))
            children.append(
                (
                    "beat",
                    _start(
                        [
                            *celery,
                            "beat",
                            "--loglevel",
                            "INFO",
                            "--schedule",
                            settings.CELERY_BEAT_SCHEDULE_FILENAME,
                        ]
                    ),
                )
            )
            self.stdout.write(self.style.SUCCESS(f"Dashboard on http://{bind}/  (Ctrl-C stops everything)"))
            name = _wait_for_first_exit(children)
            raise CommandError(f"the {name} process stopped; stopping the rest")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            _stop_all(children)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=os.environ.copy())


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_for_port(host: str, port: int, children, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_in_use(host, port):
            return
        for name, child in children:
            if child.poll() is not None:
                raise CommandError(f"the {name} process exited with status {child.returncode}")
        time.sleep(0.1)
    raise CommandError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


def _wait_for_first_exit(children) -> str:
    while True:
        for name, child in children:
            if child.poll() is not None:
                return name
        time.sleep(0.5)


def _stop_all(children) -> None:
    for _, child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for _, child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
