"""The Protecto simulator (demo/simulator): scans progressing on a clock, the contract's quirks, faults, control
endpoints and its command line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

import demo.simulator.__main__ as simulator_cli
from demo.simulator import FAILURE_MESSAGES, ProtectoSimulator, SimulatorConfig
from tests.simulator_fixtures import fast_config

T0 = datetime(2025, 5, 15, 7, 23, 28, tzinfo=UTC)
BASE_DIR = Path(__file__).resolve().parent.parent


class ManualClock:
    """A clock the test moves by hand, so progression is checked without sleeping."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def auth(simulator: ProtectoSimulator) -> dict[str, str]:
    """The Authorization header the simulator accepts."""
    return {"Authorization": f"Bearer {simulator.config.token}"}


def put(simulator: ProtectoSimulator, path: str, body: object, **kwargs: object) -> requests.Response:
    """PUT a JSON body to the simulator, with its token unless `headers` says otherwise."""
    kwargs.setdefault("headers", auth(simulator))
    kwargs.setdefault("timeout", 2)
    return requests.put(f"{simulator.url}{path}", json=body, **kwargs)  # type: ignore[arg-type]


# --- progression ---------------------------------------------------------------------------------------------


def test_a_planned_scan_moves_from_pending_to_in_progress_to_its_outcome():
    clock = ManualClock()
    sim = ProtectoSimulator(fast_config(), clock=clock)
    sim.add_scan("scan-a", pending_seconds=10, running_seconds=20, outcome="FAILED", data_source="snowflake")

    seen = [sim.answer_item("scan-a")]
    clock.advance(10)
    seen.append(sim.answer_item("scan-a"))
    clock.advance(19.9)
    seen.append(sim.answer_item("scan-a"))
    clock.advance(0.1)
    seen.append(sim.answer_item("scan-a"))

    assert [item["status"].strip() for item in seen] == ["PENDING", "IN-PROGRESS", "IN-PROGRESS", "FAILED"]
    assert seen[0]["process_started_at"] == "-" and seen[0]["process_ended_at"] == "-"
    assert seen[1]["process_started_at"] == "2025-05-15 07:23:38.000000"
    assert seen[2]["process_ended_at"] == "-" and seen[2]["error_msg"] == "-"
    assert seen[3]["process_ended_at"] == "2025-05-15 07:23:58.000000"
    assert seen[3]["error_msg"] != "-"
    assert all(item["submitted_at"] == "2025-05-15 07:23:28.000000" for item in seen)


def test_a_submitted_scan_follows_a_plan_drawn_from_the_configured_ranges():
    clock = ManualClock()
    sim = ProtectoSimulator(
        fast_config(pending_seconds=(5, 5), running_seconds=(7, 7), failure_rate=0.0), clock=clock
    )
    tracking_id = sim.submit(data_source_name="s3", object_name=["bucket", "key"])

    statuses = []
    for step in (4.9, 0.1, 6.9, 0.1):
        statuses.append(sim.scan_status(tracking_id))
        clock.advance(step)
    statuses.append(sim.scan_status(tracking_id))

    assert statuses == ["PENDING", "PENDING", "IN-PROGRESS", "IN-PROGRESS", "SUCCESS"]


def test_a_pinned_scan_never_moves_by_itself():
    clock = ManualClock()
    sim = ProtectoSimulator(fast_config(), clock=clock)
    sim.add_scan("scan-a", status="IN-PROGRESS")

    clock.advance(86400)

    item = sim.answer_item("scan-a")
    assert item["status"] == "IN-PROGRESS"
    assert item["process_started_at"] == "2025-05-15 07:23:28.000000"
    assert item["process_ended_at"] == "-"


def test_set_status_forces_transitions_with_matching_timestamps():
    clock = ManualClock()
    sim = ProtectoSimulator(fast_config(), clock=clock)
    sim.add_scan("scan-a", status="PENDING", data_source="postgres", object_name=["SalesDB", "orders"])

    clock.advance(60)
    sim.set_status("scan-a", "IN-PROGRESS")
    running = sim.answer_item("scan-a")
    clock.advance(30)
    sim.set_status("scan-a", "FAILED")
    failed = sim.answer_item("scan-a")

    assert running["process_started_at"] == "2025-05-15 07:24:28.000000" and running["process_ended_at"] == "-"
    assert failed["status"] == "FAILED"
    assert failed["process_started_at"] == running["process_started_at"]
    assert failed["process_ended_at"] == "2025-05-15 07:24:58.000000"
    # A drawn failure reason names the scan's own data source or object when it mentions one.
    templates = [template.format(source="postgres", object="SalesDB/orders") for template in FAILURE_MESSAGES]
    assert failed["error_msg"] in templates


def test_set_status_on_an_unknown_scan_is_a_key_error():
    with pytest.raises(KeyError):
        ProtectoSimulator(fast_config()).set_status("nope", "SUCCESS")


def test_a_planned_scan_given_a_status_starts_in_that_phase_now():
    clock = ManualClock()
    sim = ProtectoSimulator(fast_config(), clock=clock)
    sim.add_scan("scan-a", status="IN-PROGRESS", pending_seconds=3, running_seconds=4, outcome="SUCCESS")

    now_item = sim.answer_item("scan-a")
    clock.advance(4)

    assert now_item["status"].strip() == "IN-PROGRESS"
    assert now_item["submitted_at"] == "2025-05-15 07:23:25.000000"
    assert sim.scan_status("scan-a") == "SUCCESS"


# --- answer shapes and quirks ----------------------------------------------------------------------------------


def test_the_2024_answer_has_the_documented_quirks(simulator):
    simulator.add_scan("scan-a", status="PENDING ")

    answer = put(simulator, "/data-scan-status", ["scan-a"]).json()

    assert answer["success"] == "true"
    assert answer["error"] == {"message": ""}
    [item] = answer["data"]
    assert set(item) == {
        "tracking_id",
        "status",
        "submitted_at",
        "process_started_at",
        "process_ended_at",
        "error_msg",
    }
    assert item["status"] == "PENDING "
    assert (item["process_started_at"], item["process_ended_at"], item["error_msg"]) == ("-", "-", "-")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", item["submitted_at"])


def test_the_2025_answer_carries_request_status_input_payload_and_nulls(simulator):
    simulator.configure(shape="2025")
    simulator.add_scan("scan-a", status="PENDING", data_source="salesforce", object_name=["CustomerDB", "T"])

    answer = put(simulator, "/data-scan/status", ["scan-a"]).json()

    assert answer["success"] is True
    [item] = answer["data"]
    assert "status" not in item and item["request_status"] == "PENDING"
    assert item["process_started_at"] is None and item["process_ended_at"] is None
    assert item["input_payload"] == {
        "data_source_name": "salesforce",
        "object_name": ["CustomerDB", "T"],
        "data_samples": [],
    }


def test_a_scan_pinned_without_a_submission_time_reports_none():
    sim = ProtectoSimulator(fast_config())
    sim.add_scan("scan-a", status="PENDING", submitted_at=None)

    assert sim.answer_item("scan-a")["submitted_at"] == "-"
    sim.configure(shape="2025")
    assert sim.answer_item("scan-a")["submitted_at"] is None


@pytest.mark.parametrize(("rate", "expected"), [(1.0, {"PENDING "}), (0.0, {"PENDING"})])
def test_trailing_spaces_on_statuses_follow_the_configured_rate(rate, expected):
    sim = ProtectoSimulator(fast_config(trailing_space_rate=rate, pending_seconds=(60, 60)))

    answer = sim.status_answer([f"scan-{n}" for n in range(20)])

    assert {item["status"] for item in answer["data"]} == expected


def test_minted_ids_are_uuids_in_2024_and_uuid_plus_14_digits_in_2025():
    clock = ManualClock()
    sim = ProtectoSimulator(fast_config(), clock=clock)

    old_style = sim.submit()
    sim.configure(shape="2025")
    new_style = sim.submit()

    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", old_style)
    assert len(new_style) == 50
    assert new_style.endswith("15052025072328")  # DDMMYYYYHHMMSS of the clock, as in the docs' example


def test_the_same_seed_gives_the_same_ids_and_plans():
    first = ProtectoSimulator(fast_config(seed=42), clock=ManualClock())
    second = ProtectoSimulator(fast_config(seed=42), clock=ManualClock())

    ids = [first.submit(), first.submit()]

    assert [second.submit(), second.submit()] == ids
    assert first.answer_item(ids[0]) == second.answer_item(ids[0])


def test_duplicate_ids_in_one_request_are_answered_once(simulator):
    simulator.add_scan("scan-a", status="SUCCESS")

    answer = put(simulator, "/data-scan-status", ["scan-a", "scan-a"]).json()

    assert [item["tracking_id"] for item in answer["data"]] == ["scan-a"]


def test_malformed_ids_are_never_reported(simulator):
    answer = put(simulator, "/data-scan-status", ["good-id", "bad id!", "x" * 129]).json()

    assert [item["tracking_id"] for item in answer["data"]] == ["good-id"]


# --- HTTP rules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic xyz"}])
def test_a_missing_or_wrong_token_is_401_without_echoing_it(simulator, headers):
    response = put(simulator, "/data-scan-status", ["scan-a"], headers=headers)

    assert response.status_code == 401
    assert response.json() == {"data": None, "success": "false", "error": {"message": "Invalid or expired token"}}
    assert "wrong-token" not in response.text
    assert simulator.status_requests == []


@pytest.mark.parametrize("body", [b"not json", b"42", b'{"ids": ["a"]}', b'["a", 3]', b""])
def test_a_bad_status_body_is_400_with_a_json_error(simulator, body):
    response = requests.put(f"{simulator.url}/data-scan-status", data=body, headers=auth(simulator), timeout=2)

    assert response.status_code == 400
    assert response.json()["success"] == "false"
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("body", [[], [{"object_name": ["x"]}], [{"data_source_name": "s3"}], ["text"]])
def test_a_bad_submit_body_is_400(simulator, body):
    response = put(simulator, "/data-scan-async", body)

    assert response.status_code == 400
    assert simulator.submit_requests == []


def test_an_unknown_path_is_404(simulator):
    response = put(simulator, "/data-scan-list", ["scan-a"])

    assert response.status_code == 404
    assert response.json()["success"] == "false"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH"])
def test_api_paths_only_take_put(simulator, method):
    response = requests.request(method, f"{simulator.url}/data-scan-status", headers=auth(simulator), timeout=2)

    assert response.status_code == 405
    assert response.headers["Allow"] == "PUT"


def test_the_request_counters_and_reset_log(simulator):
    put(simulator, "/data-scan-status", ["a"])
    put(simulator, "/data-scan-status", ["b", "c"], headers={})

    assert simulator.request_count == 2
    assert simulator.status_requests == [["a"]]  # the refused call never reached the endpoint
    assert simulator.last_authorization_ok is False
    simulator.reset_log()
    assert (simulator.request_count, simulator.status_requests, simulator.last_authorization_ok) == (0, [], None)


# --- faults ------------------------------------------------------------------------------------------------------


def test_error_rate_one_answers_500_with_a_json_error(simulator):
    simulator.configure(error_rate=1.0)

    response = put(simulator, "/data-scan-status", ["scan-a"])

    assert response.status_code == 500
    assert response.json()["error"]["message"]


def test_rate_limit_rate_one_answers_429_with_retry_after(simulator):
    simulator.configure(rate_limit_rate=1.0, retry_after=7)

    response = put(simulator, "/data-scan-async", [{"data_source_name": "s3", "object_name": ["b"]}])

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_malformed_answers_are_the_docs_missing_comma(simulator):
    simulator.configure(malformed_rate=1.0)

    response = put(simulator, "/data-scan-status", ["scan-a"])

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert '] "success"' in response.text


def test_rates_adding_up_past_one_are_checked_in_order(simulator):
    simulator.configure(error_rate=1.0, malformed_rate=1.0)

    assert put(simulator, "/data-scan-status", ["scan-a"]).status_code == 500


def test_queued_faults_come_first_and_in_order(simulator):
    simulator.fail_next(1, kind="500")
    simulator.fail_next(1, kind="429")

    codes = [put(simulator, "/data-scan-status", ["scan-a"]).status_code for _ in range(3)]

    assert codes == [500, 429, 200]


def test_an_unknown_fault_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        ProtectoSimulator(fast_config()).fail_next(1, kind="teapot")


def test_faults_never_hit_the_control_endpoints(simulator):
    simulator.configure(error_rate=1.0, latency=5.0)

    started = time.monotonic()
    response = requests.get(f"{simulator.url}/_sim/state", headers=auth(simulator), timeout=2)

    assert response.status_code == 200
    assert time.monotonic() - started < 1


def test_stopping_releases_a_hanging_request_at_once():
    sim = ProtectoSimulator(fast_config(hang_seconds=30)).start()
    sim.fail_next(1, kind="hang")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            put(sim, "/data-scan-status", ["scan-a"], timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    sim.stop()
    caller.join(timeout=5)

    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert errors  # the hanging call ended without an answer


def _raw_status_call(simulator: ProtectoSimulator) -> socket.socket:
    """Send a status call on a raw socket and return it, so a test can watch the answer arrive byte by byte."""
    body = json.dumps(["scan-a"]).encode()
    head = (
        f"PUT /data-scan-status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {simulator.config.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    host, port = simulator.url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(head.encode() + body)
    return conn


def test_drip_sends_the_whole_answer_one_byte_at_a_time(simulator):
    simulator.configure(drip_seconds=0.05)

    started = time.monotonic()
    with _raw_status_call(simulator) as conn:
        received = [conn.recv(100) for _ in range(12)]

    # The status line itself drips: a client cannot even learn the status code quickly.
    assert b"".join(received) == b"HTTP/1.1 200"
    assert all(len(piece) == 1 for piece in received)
    assert time.monotonic() - started >= 11 * 0.05


def test_stopping_releases_a_dripping_answer_at_once():
    sim = ProtectoSimulator(fast_config(drip_seconds=30)).start()
    with _raw_status_call(sim) as conn:
        assert conn.recv(100) == b"H"
        started = time.monotonic()
        sim.stop()

        assert conn.recv(100) == b""  # closed, not dripped on
    assert time.monotonic() - started < 2


def test_huge_pads_a_status_answer_to_the_size_in_the_first_error_msg(simulator):
    simulator.add_scan("scan-a", status="FAILED", error_msg="Permission denied")
    simulator.configure(huge_bytes=100_000)

    response = put(simulator, "/data-scan-status", ["scan-a", "scan-b"])

    assert len(response.content) == 100_000
    first, second = response.json()["data"]
    assert len(first["error_msg"]) > 99_000
    assert second["error_msg"] == "-"


def test_huge_pads_an_error_answer_in_its_message(simulator):
    simulator.configure(huge_bytes=50_000, error_rate=1.0)

    response = put(simulator, "/data-scan-status", ["scan-a"])

    assert response.status_code == 500
    assert len(response.content) == 50_000
    assert len(response.json()["error"]["message"]) > 49_000


def test_redirect_answers_every_api_call_with_a_302_to_the_url(simulator):
    simulator.configure(redirect_url="https://elsewhere.example/api/vault/data-scan-status")

    response = put(simulator, "/data-scan-status", ["scan-a"], allow_redirects=False)
    unauthorised = put(simulator, "/data-scan-async", [], headers={}, allow_redirects=False)

    assert response.status_code == unauthorised.status_code == 302
    assert response.headers["Location"] == "https://elsewhere.example/api/vault/data-scan-status"
    assert simulator.status_requests == []  # redirected before it was read


def test_the_answer_faults_can_be_switched_over_http(simulator):
    changes = {"drip_seconds": 0.5, "huge_bytes": 1000, "redirect_url": "/elsewhere"}

    response = requests.post(f"{simulator.url}/_sim/config", json=changes, headers=auth(simulator), timeout=2)

    assert response.status_code == 200
    assert {name: response.json()["data"]["config"][name] for name in changes} == changes


# --- control -----------------------------------------------------------------------------------------------------


def test_control_endpoints_need_the_token(simulator):
    response = requests.get(f"{simulator.url}/_sim/state", timeout=2)

    assert response.status_code == 401


def test_state_shows_config_and_counts_but_never_the_token(simulator):
    simulator.add_scan("scan-a", status="SUCCESS")
    simulator.add_scan("scan-b", status="FAILED")
    put(simulator, "/data-scan-status", ["scan-a"])

    response = requests.get(f"{simulator.url}/_sim/state", headers=auth(simulator), timeout=2)

    state = response.json()["data"]
    assert simulator.config.token not in response.text
    assert "token" not in state["config"]
    assert state["config"]["shape"] == "2024"
    assert (state["scans"], state["by_status"]) == (2, {"FAILED": 1, "SUCCESS": 1})
    assert (state["request_count"], state["status_requests"]) == (1, 1)


def test_post_config_changes_settings_live(simulator):
    response = requests.post(
        f"{simulator.url}/_sim/config", json={"shape": 2025, "error_rate": 0.5}, headers=auth(simulator), timeout=2
    )

    assert response.status_code == 200
    assert (simulator.config.shape, simulator.config.error_rate) == ("2025", 0.5)


@pytest.mark.parametrize(
    "changes",
    [{"error_rate": 1.5}, {"no_such_setting": 1}, {"token": "new"}, {"pending_seconds": [9, 1]}, ["error_rate"]],
)
def test_post_config_refuses_bad_changes_and_keeps_the_old_settings(simulator, changes):
    before = simulator.config

    response = requests.post(f"{simulator.url}/_sim/config", json=changes, headers=auth(simulator), timeout=2)

    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert simulator.config == before


def test_post_scans_pins_scans_that_status_calls_then_report(simulator):
    scans = [
        {
            "tracking_id": "pinned-a",
            "status": "FAILED",
            "error_msg": "Permission denied",
            "submitted_at": "2025-05-15T07:00:00",
        },
        {"tracking_id": "pinned-b", "status": "IN-PROGRESS", "data_source": "s3", "object_name": ["bucket"]},
    ]

    response = requests.post(f"{simulator.url}/_sim/scans", json=scans, headers=auth(simulator), timeout=2)
    answer = put(simulator, "/data-scan-status", ["pinned-a", "pinned-b"]).json()

    assert response.json()["data"] == {"added": ["pinned-a", "pinned-b"]}
    items = {item["tracking_id"]: item for item in answer["data"]}
    assert (items["pinned-a"]["status"], items["pinned-a"]["error_msg"]) == ("FAILED", "Permission denied")
    assert items["pinned-a"]["submitted_at"] == "2025-05-15 07:00:00.000000"
    assert items["pinned-b"]["status"] == "IN-PROGRESS"


def test_post_scans_adds_nothing_when_one_scan_is_invalid(simulator):
    scans = [{"tracking_id": "fine", "status": "PENDING"}, {"tracking_id": "broken", "submitted_at": "yesterday"}]

    response = requests.post(f"{simulator.url}/_sim/scans", json=scans, headers=auth(simulator), timeout=2)

    assert response.status_code == 400
    assert simulator.state()["scans"] == 0


def test_post_fail_next_queues_faults_over_http(simulator):
    response = requests.post(
        f"{simulator.url}/_sim/fail-next", json={"count": 1, "kind": "500"}, headers=auth(simulator), timeout=2
    )

    assert response.json()["data"]["queued_faults"] == ["500"]
    assert put(simulator, "/data-scan-status", ["scan-a"]).status_code == 500


# --- configuration, logging, lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"error_rate": -0.1},
        {"hang_rate": 1.01},
        {"shape": "2023"},
        {"latency": -1},
        {"pending_seconds": (5.0,)},
        {"status_paths": ("no-slash",)},
        {"token": ""},
        {"drip_seconds": -1},
        {"huge_bytes": -5},
        {"huge_bytes": 1.5},
        {"huge_bytes": 10**12},
        {"redirect_url": "ftp://elsewhere"},
        {"redirect_url": "/a\r\nSet-Cookie: x"},
    ],
)
def test_invalid_settings_are_refused(changes):
    with pytest.raises(ValueError):
        SimulatorConfig(**changes).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProtectoSimulator(fast_config()).configure(**changes)


def test_one_log_line_per_request_without_the_token(capsys):
    with ProtectoSimulator(fast_config(quiet=False)) as sim:
        put(sim, "/data-scan-status", ["a", "b", "c"])
        put(sim, "/data-scan-status", ["a"], headers={"Authorization": "Bearer leaked-if-logged"})

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("PUT /data-scan-status batch=3 -> 200")
    assert lines[1].endswith("PUT /data-scan-status -> 401")
    assert "simulator-token" not in "".join(lines) and "leaked-if-logged" not in "".join(lines)


def test_quiet_silences_the_request_log(simulator, capsys):
    put(simulator, "/data-scan-status", ["a"])

    assert capsys.readouterr().err == ""


def test_the_context_manager_starts_and_stops_the_server():
    with ProtectoSimulator(fast_config()) as sim:
        url = sim.url
        assert put(sim, "/data-scan-status", ["a"]).status_code == 200

    with pytest.raises(requests.ConnectionError):
        requests.put(f"{url}/data-scan-status", json=["a"], timeout=1)


# --- command line (python -m demo.simulator) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--error-rate", "1.5"], "error_rate"),
        (["--failure-rate", "-0.2"], "failure_rate"),
        (["--port", "70000"], "--port"),
        (["--pending-seconds", "abc"], "--pending-seconds"),
        (["--running-seconds", "9,1"], "running_seconds"),
        (["--latency", "-1"], "latency"),
        (["--token", ""], "token"),
        (["--shape", "2023"], "--shape"),
        (["--drip-seconds", "-1"], "drip_seconds"),
        (["--huge-bytes", "-1"], "huge_bytes"),
        (["--redirect-url", "ftp://x"], "redirect_url"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_the_command_refuses_bad_options_with_one_clear_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(simulator_cli.main(args))

    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize(
    ("given", "environ", "expected"),
    [
        ("from-option", {"SIMULATOR_TOKEN": "from-env"}, "from-option"),
        (None, {"SIMULATOR_TOKEN": "from-env", "DEMO_MODE": "true", "PROTECTO_AUTH_TOKEN": "t"}, "from-env"),
        (None, {"DEMO_MODE": "true", "PROTECTO_AUTH_TOKEN": "dashboard-token"}, "dashboard-token"),
        # Outside demo mode the dashboard's token may be a real tenant's secret: never hand it to a simulator.
        (None, {"DEMO_MODE": "false", "PROTECTO_AUTH_TOKEN": "real-secret"}, "simulator-token"),
        (None, {}, "simulator-token"),
    ],
)
def test_the_command_picks_its_token_in_a_fixed_order(given, environ, expected):
    assert simulator_cli.token_from(given, environ) == expected


def test_the_command_turns_the_answer_faults_on():
    options = simulator_cli.build_parser().parse_args(
        ["--drip-seconds", "1", "--huge-bytes", "10000000", "--redirect-url", "http://elsewhere.example/"]
    )

    config = simulator_cli.config_from(options, {})

    assert (config.drip_seconds, config.huge_bytes, config.redirect_url) == (
        1.0,
        10_000_000,
        "http://elsewhere.example/",
    )


def test_the_command_help_documents_the_answer_faults(capsys):
    with pytest.raises(SystemExit):
        simulator_cli.build_parser().parse_args(["--help"])

    text = capsys.readouterr().out
    assert "--drip-seconds" in text and "--huge-bytes" in text and "--redirect-url" in text


def _read_line(stream, timeout: float) -> str:
    """One line from a pipe, or "" if none arrives in time (so a broken command cannot hang the test)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_the_command_serves_until_stopped_and_exits_cleanly(stop_signal):
    env = {**os.environ, "SIMULATOR_TOKEN": "command-token", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.simulator", "--port", "0", "--shape", "2025", "--seed", "3"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = _read_line(process.stdout, timeout=15)
        match = re.search(r"serving on (http://\S+)", first_line)
        assert match, f"no URL announced: {first_line!r}"
        response = requests.put(
            f"{match.group(1)}/data-scan/status",
            json=["scan-a"],
            headers={"Authorization": "Bearer command-token"},
            timeout=2,
        )
        assert response.status_code == 200 and response.json()["success"] is True
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert "PUT /data-scan/status batch=1 -> 200" in stderr
    assert "command-token" not in stderr


def test_the_command_exits_non_zero_without_a_traceback_on_a_bad_option():
    result = subprocess.run(
        [sys.executable, "-m", "demo.simulator", "--error-rate", "2"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "error_rate must be a number between 0 and 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_exits_non_zero_with_one_line_when_its_port_is_taken():
    with ProtectoSimulator(fast_config()) as squatter:
        port = squatter.url.rsplit(":", 1)[1]
        result = subprocess.run(
            [sys.executable, "-m", "demo.simulator", "--port", port],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"could not listen on 127.0.0.1:{port}" in result.stderr


# --- saved state (what `make run` keeps in var/simulator-state.json) ------------------------------------------


def test_a_simulator_reading_the_saved_state_answers_as_the_one_that_wrote_it(tmp_path):
    state_file, clock = tmp_path / "state.json", ManualClock()
    first = ProtectoSimulator(fast_config(shape="2025"), clock=clock, state_file=state_file)
    planned = first.submit(data_source_name="snowflake", object_name=["DB", "T"], data_samples=[{"a": 1}])
    first.add_scan("pinned-odd", status="QUEUED ", submitted_at=None)
    first.add_scan("failing", pending_seconds=5, running_seconds=5, outcome="FAILED")
    first.add_scan("forced", pending_seconds=60, running_seconds=60)
    first.set_status("forced", "IN-PROGRESS")
    ids = [planned, "pinned-odd", "failing", "forced"]
    clock.advance(3)
    answers_then = [first.answer_item(tracking_id) for tracking_id in ids]

    second = ProtectoSimulator(fast_config(shape="2025"), clock=clock, state_file=state_file)
    answers_now = [second.answer_item(tracking_id) for tracking_id in ids]
    clock.advance(30)

    assert answers_now == answers_then
    # Plans are kept in absolute times: the clock goes on where it was, it does not start again.
    assert second.scan_status("failing") == "FAILED"
    assert [second.scan_status(tracking_id) for tracking_id in ids] == [first.scan_status(i) for i in ids]


def test_without_a_state_file_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    simulator = ProtectoSimulator(fast_config())

    simulator.submit()

    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_state_file_stops_the_command_with_one_line(tmp_path):
    state_file = tmp_path / "state.json"
    state_file.write_text('{"version": 1, "scans": [{"tracking_id": "half')

    result = subprocess.run(
        [sys.executable, "-m", "demo.simulator", "--port", "0", "--state-file", str(state_file)],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and str(state_file) in result.stderr and "delete it" in result.stderr
    assert "Traceback" not in result.stderr
    assert state_file.read_text().endswith('"half')  # left as it was, for whoever wants to look at it


def test_the_command_serves_on_a_socket_its_parent_bound():
    # How `make run` hands the simulator its port: bound first, so nobody else can take it meanwhile.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = {**os.environ, "SIMULATOR_TOKEN": "fd-token", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "demo.simulator", "--fd", str(listener.fileno()), "--quiet"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(listener.fileno(),),
        )
    try:
        announced = _read_line(process.stdout, timeout=15)
        response = requests.put(
            f"http://127.0.0.1:{port}/data-scan-status",
            json=["scan-a"],
            headers={"Authorization": "Bearer fd-token"},
            timeout=5,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)

    assert f"serving on http://127.0.0.1:{port}" in announced
    assert response.status_code == 200 and response.json()["data"][0]["tracking_id"] == "scan-a"
