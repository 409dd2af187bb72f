"""`make run` (python -m demo.run) really starts the dashboard's processes and really stops every one of them.

Each test starts the runner as a real process with its own var/ (SQLite, filesystem broker) and free ports, and
watches its process tree with `ps` and its output. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from bs4 import BeautifulSoup

from demo.seed import FINISHED, LIVE, LONG_RUNNING, STUCK
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
    # -ww: without a terminal ps cuts each line at 80 columns, and a longer checkout path then cut "worker" off.
    command = ["ps", "-ww", "-e", "-o", "pid=,ppid=,stat=,args="]
    out = subprocess.run(command, capture_output=True, text=True).stdout
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


def _start_runner(
    tmp_path: Path,
    web_port: int,
    simulator_port: int,
    *options: str,
    **env_changes: str,
) -> tuple[subprocess.Popen, Path]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"REDIS_URL", "DATABASE_URL", "SECRET_KEY", "DEMO_MODE", "PORT", "SITE_URL", "LOG_LEVEL"}
        and not name.startswith(("PROTECTO_", "EMAIL_", "ALERT_"))
    }
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        SIMULATOR_PORT=str(simulator_port),
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        PYTHONUNBUFFERED="1",
        **env_changes,
    )
    log = tmp_path / "run.log"
    with log.open("w") as output:
        runner = subprocess.Popen(
            [sys.executable, "-m", "demo.run", "--port", str(web_port), "--web-workers", "1", *options],
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


def _box_span(lines: list[str]) -> tuple[int, int] | None:
    """Where the login box is among the output lines (a +---+ frame around | ... | lines): (first, last)."""
    frames = [n for n, line in enumerate(lines) if line.startswith("+-") and line.endswith("-+")]
    return (frames[0], frames[1]) if len(frames) >= 2 else None


def _box(log: Path) -> list[str]:
    """The lines of the login box the runner printed, frame included; [] before it is out."""
    lines = log.read_text().splitlines()
    span = _box_span(lines)
    return lines[span[0] : span[1] + 1] if span else []


def _start_until_ready(
    tmp_path: Path, *options: str, **env: str
) -> tuple[subprocess.Popen, Path, int, int, dict[int, str]]:
    web_port, simulator_port = free_port(), free_port()
    runner, log = _start_runner(tmp_path, web_port, simulator_port, *options, **env)
    # Ready is when the login box is out: it comes last, once the web server answers.
    _wait_until(lambda: len(_box(log)) > 0, runner, log, START_SECONDS)
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


def _box_value(box: list[str], name: str) -> str:
    [line] = [line for line in box if line.startswith(f"| {name}:")]
    return line.strip("| ").split(":", 1)[1].split()[0]


def _log_in(port: int, username: str, password: str) -> requests.Session:
    """A session logged in through the real login form; AssertionError if the login is refused."""
    session = requests.Session()
    url = f"http://127.0.0.1:{port}/login/"
    form = BeautifulSoup(session.get(url, timeout=5).text, "html.parser")
    token = form.select_one("input[name=csrfmiddlewaretoken]")["value"]
    answer = session.post(
        url,
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": url},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 302, f"login refused ({answer.status_code})"
    return session


def _tracked(tmp_path: Path) -> dict[str, str]:
    """tracking ID -> status in the runner's own SQLite database."""
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / "db.sqlite3", timeout=10)) as db:
        return dict(db.execute("SELECT tracking_id, status FROM scans_scan").fetchall())


def test_the_runner_starts_every_part_and_ctrl_c_stops_them_all(tmp_path):
    runner, log, web_port, simulator_port, started = _start_until_ready(tmp_path)
    try:
        assert _accepts(simulator_port)
        roles = sorted(_role(command) for pid, command in started.items() if _processes()[pid][0] == runner.pid)
        assert roles == ["beat", "simulator", "watchdog", "web", "worker"]
        box = _box(log)
        # The login printed is one that works, through the real login form.
        _log_in(web_port, _box_value(box, "User"), _box_value(box, "Password"))

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
    assert _box_value(box, "User") == "admin" and output.count(_box_value(box, "Password")) == 1
    assert f"| Dashboard: http://127.0.0.1:{web_port}/" in output and "make password" in output
    key_file = tmp_path / "var" / "secret-key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text().strip()) >= 50
    # The simulator kept every tracked scan in var/, for the next start.
    saved = json.loads((tmp_path / "var" / "simulator-state.json").read_text())
    assert set(_tracked(tmp_path)) <= {record["tracking_id"] for record in saved["scans"]}


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


def _refused(tmp_path: Path, web_port: int, simulator_port: int) -> tuple[int, list[str]]:
    runner, log = _start_runner(tmp_path, web_port, simulator_port)
    runner.wait(timeout=STOP_SECONDS)
    return runner.returncode, log.read_text().splitlines()


def test_the_runner_refuses_a_web_port_in_use_with_one_line(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        status, lines = _refused(tmp_path, port, free_port())

    assert status != 0
    assert lines == [
        f"python -m demo.run: 127.0.0.1:{port} is already in use; stop what runs there or pick another: "
        "make run PORT=<another port>"
    ]
    assert not (tmp_path / "var").exists()  # refused before preparing anything


def test_the_runner_refuses_a_simulator_port_in_use_before_starting_anything(tmp_path):
    # Someone else's server on the simulator's port: the demo must never register its scans there.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        web_port = free_port()
        status, lines = _refused(tmp_path, web_port, port)
        squatter.settimeout(0.5)
        with pytest.raises(TimeoutError):
            squatter.accept()  # nothing was ever sent to it

    assert status != 0
    assert lines == [
        f"python -m demo.run: the simulator's port 127.0.0.1:{port} is already in use; stop what runs there "
        "or pick another: make run SIMULATOR_PORT=<another port>"
    ]
    assert not (tmp_path / "var").exists() and not _accepts(web_port)


def test_demo_mode_forced_on_beside_a_real_api_url_is_refused_before_anything_starts(tmp_path):
    # The demo's scans would be registered with whatever server that URL names.
    runner, log = _start_runner(
        tmp_path, free_port(), free_port(), PROTECTO_API_URL="http://127.0.0.1:9", DEMO_MODE="true"
    )
    runner.wait(timeout=STOP_SECONDS)

    assert runner.returncode != 0
    [line] = log.read_text().splitlines()
    assert "DEMO_MODE=true with PROTECTO_API_URL=http://127.0.0.1:9" in line and "unset one of the two" in line
    assert not (tmp_path / "var").exists()


def test_a_malformed_port_variable_is_refused_with_one_line(tmp_path):
    runner, log = _start_runner(tmp_path, free_port(), free_port(), PORT="80a0")
    runner.wait(timeout=STOP_SECONDS)

    # --port given on the command line still wins, but a broken PORT in .env must not pass unnoticed.
    assert runner.returncode == 2
    assert log.read_text().splitlines() == [
        "python -m demo.run: PORT must be a port number between 1 and 65535, not '80a0'"
    ]


SEEDED = FINISHED + LONG_RUNNING + STUCK + LIVE
# Lines a quiet log may have after the login box: mail (one line each), and the start-up lines of the worker
# and the watchdog, which may come just after the box.
QUIET_OK = (
    "mail to ops@example.com (not sent: no EMAIL_HOST): [",
    "Connected to filesystem://",
    "celery@",
    "watchdog: checking every",
)


def test_a_running_demo_logs_no_line_per_tick_poll_or_page_and_one_per_mail(tmp_path):
    # Ticks every 2 s and a new scan every 1-2 s: a minute's worth of activity in about 15 seconds.
    options = ("--demo-every", "1,2")
    runner, log, web_port, _, started = _start_until_ready(tmp_path, *options, REFRESH_INTERVAL_SECONDS="2")
    try:
        box = _box(log)
        session = _log_in(web_port, _box_value(box, "User"), _box_value(box, "Password"))
        for _ in range(5):  # what an open page does every few seconds
            session.get(f"http://127.0.0.1:{web_port}/", headers={"HX-Request": "true"}, timeout=5)
        _wait_until(lambda: len(_tracked(tmp_path)) >= SEEDED + 4, runner, log, 30)
        _wait_until(lambda: "mail to" in log.read_text(), runner, log, 20)
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=STOP_SECONDS)
    finally:
        _clean_up(runner, started)

    lines = log.read_text().splitlines()
    after_box = lines[_box_span(lines)[1] + 1 : lines.index("Stopping...")]
    assert [line for line in after_box if line and not any(ok in line for ok in QUIET_OK)] == []
    assert any("mail to" in line for line in after_box)
    assert not any("Content-Type" in line or "GET /" in line for line in lines)


def test_links_in_mail_follow_the_port_make_run_serves(tmp_path, smtp_server):
    runner, log, web_port, _, started = _start_until_ready(
        tmp_path,
        "--demo-every",
        "600,600",
        REFRESH_INTERVAL_SECONDS="2",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp_server.port),
    )
    try:
        # The demo seeds failed scans: their alerts go out at the first tick.
        _wait_until(lambda: len(smtp_server.messages) > 0, runner, log, 30)
    finally:
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=STOP_SECONDS)
        _clean_up(runner, started)

    body = smtp_server.messages[0].get_body(("plain",)).get_content()
    links = [word for word in body.split() if word.startswith("http")]
    assert links and all(link.startswith(f"http://127.0.0.1:{web_port}/scans/") for link in links)
