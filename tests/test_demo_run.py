"""`make run` (python -m demo.run) really starts the dashboard's processes and really stops every one of them.

Each test starts the runner as a real process with its own var/ (SQLite, filesystem broker) and free ports, and
watches its process tree with `ps`. Every wait is bounded, so both tests together stay well under a minute.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 90
STOP_SECONDS = 20


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process on the machine."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,stat=,args="], capture_output=True, text=True).stdout
    table = {}
    for line in out.splitlines():
        pid, ppid, stat, *args = line.split(None, 3)
        table[int(pid)] = (int(ppid), stat, args[0] if args else "")
    return table


def _descendants(pid: int) -> dict[int, str]:
    """Living (not zombie) descendants of `pid`: pid -> command line."""
    table = _processes()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, stat, args) in table.items():
            if ppid == parent and child not in found and not stat.startswith("Z"):
                found[child] = args
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    entry = _processes().get(pid)
    return entry is not None and not entry[1].startswith("Z")


def _clean_up(runner: subprocess.Popen, started: dict[int, str]) -> None:
    """After a failed test: kill what is left, but only processes that are still the ones this test started."""
    if runner.poll() is None:
        runner.kill()
        runner.wait()
    table = _processes()
    for pid, command in started.items():
        # A pid whose command line changed was reused by someone else's process: leave it alone.
        if pid in table and table[pid][2] == command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _start_runner(tmp_path: Path, web_port: int, simulator_port: int) -> tuple[subprocess.Popen, Path]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"REDIS_URL", "DATABASE_URL", "SECRET_KEY", "DEMO_MODE"}
        and not name.startswith("PROTECTO_")
    }
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        SIMULATOR_PORT=str(simulator_port),
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "run.log"
    with log.open("w") as output:
        runner = subprocess.Popen(
            [sys.executable, "-m", "demo.run", "--port", str(web_port), "--web-workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return runner, log


def _wait_until(check: Callable[[], bool], runner: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        assert runner.poll() is None, f"the runner exited early:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)
    pytest.fail(f"not ready within {seconds}s:\n{log.read_text()[-3000:]}")


def _login_page_answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/login/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _start_until_ready(tmp_path: Path) -> tuple[subprocess.Popen, Path, int, int, dict[int, str]]:
    web_port, simulator_port = free_port(), free_port()
    runner, log = _start_runner(tmp_path, web_port, simulator_port)
    _wait_until(lambda: _login_page_answers(web_port), runner, log, START_SECONDS)
    _wait_until(lambda: len(_descendants(runner.pid)) >= 5, runner, log, 10)
    return runner, log, web_port, simulator_port, _descendants(runner.pid)


def _role(command: str) -> str:
    for marker, role in (
        ("demo.simulator", "simulator"),
        ("manage.py watchdog", "watchdog"),
        ("gunicorn", "web"),
        (" worker", "worker"),
        (" beat", "beat"),
    ):
        if marker in command:
            return role
    return "other"


def test_the_runner_starts_every_part_and_ctrl_c_stops_them_all(tmp_path):
    runner, log, web_port, simulator_port, started = _start_until_ready(tmp_path)
    try:
        assert _accepts(simulator_port)
        roles = sorted(_role(command) for pid, command in started.items() if _processes()[pid][0] == runner.pid)
        assert roles == ["beat", "simulator", "watchdog", "web", "worker"]

        stop_began = time.monotonic()
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=STOP_SECONDS)
        stop_took = time.monotonic() - stop_began
    finally:
        _clean_up(runner, started)

    output = log.read_text()
    assert stop_took < STOP_SECONDS
    assert not _accepts(web_port) and not _accepts(simulator_port)
    # Gunicorn's and Celery's own workers included: nothing the runner started outlives it.
    assert [pid for pid in started if _alive(pid)] == []
    assert output.count("Demo mode on") == 1
    assert output.count("password:") == 1
    key_file = tmp_path / "var" / "secret-key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text().strip()) >= 50


def test_when_one_part_dies_the_runner_stops_the_rest_and_exits_non_zero(tmp_path):
    runner, log, web_port, simulator_port, started = _start_until_ready(tmp_path)
    try:
        [web] = [
            pid for pid, command in started.items() if _processes()[pid][0] == runner.pid and "gunicorn" in command
        ]
        os.kill(web, signal.SIGKILL)
        runner.wait(timeout=STOP_SECONDS)
    finally:
        _clean_up(runner, started)

    assert runner.returncode != 0
    complaints = [line for line in log.read_text().splitlines() if "stopping the rest" in line]
    assert len(complaints) == 1 and "the web process stopped" in complaints[0]
    assert not _accepts(web_port) and not _accepts(simulator_port)
    assert [pid for pid in started if _alive(pid)] == []


def test_the_runner_refuses_a_port_in_use_with_one_line(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        runner, log = _start_runner(tmp_path, port, free_port())
        runner.wait(timeout=STOP_SECONDS)

    assert runner.returncode != 0
    lines = log.read_text().splitlines()
    assert lines == [
        f"python -m demo.run: 127.0.0.1:{port} is already in use; stop what runs there or pick --port"
    ]
    assert not (tmp_path / "var").exists()  # refused before preparing anything
