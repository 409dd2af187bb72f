"""The Protecto client against the simulator over real HTTP: auth, batching, retries and failure modes."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from demo.simulator import ProtectoSimulator
from protecto import (
    UNKNOWN,
    ProtectoAuthError,
    ProtectoBadAnswer,
    ProtectoClient,
    ProtectoError,
    ProtectoUnavailable,
)
from tests.ports import free_port
from tests.simulator_fixtures import fast_config


def client_for(simulator: ProtectoSimulator, **options: object) -> ProtectoClient:
    """A client for the simulator with test-sized timeouts; `options` override them."""
    settings = {"base_url": simulator.url, "token": simulator.config.token, "timeout": 2, "backoff": 0.01}
    settings.update(options)
    return ProtectoClient(**settings)  # type: ignore[arg-type]


def test_the_bearer_token_and_json_headers_are_sent(simulator, protecto_client):
    simulator.add_scan("scan-a", status="PENDING")

    protecto_client.fetch_status_batch(["scan-a"])

    assert simulator.last_authorization_ok is True
    headers = {name.lower(): value for name, value in simulator.last_request_headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"


def test_a_wrong_token_is_refused_at_once_without_retry_or_leak(simulator):
    secret = "wrong-token-5ecret-abcdef"
    client = client_for(simulator, token=secret, max_retries=3)

    with pytest.raises(ProtectoAuthError) as caught:
        client.fetch_status_batch(["scan-a"])

    assert caught.value.permanent is True
    assert caught.value.status_code == 401
    assert "refused the token (HTTP 401)" in str(caught.value)
    assert "Invalid or expired token" in str(caught.value)
    assert secret not in str(caught.value)
    assert client.requests_made == 1
    assert simulator.request_count == 1
    assert simulator.last_authorization_ok is False


def test_a_token_echoed_back_by_the_server_is_redacted_from_the_error(simulator, protecto_client):
    simulator.fail_next(1, kind="401-echo")

    with pytest.raises(ProtectoAuthError) as caught:
        protecto_client.fetch_status_batch(["scan-a"])

    message = str(caught.value)
    assert simulator.config.token not in message
    assert "Token *** is invalid" in message
    assert "\n" not in message and len(message) <= 300


def test_a_token_echoed_inside_scan_data_never_reaches_the_caller(simulator, protecto_client):
    token = simulator.config.token
    simulator.override_answer(
        "echo-1",
        [{"tracking_id": "echo-1", "status": "FAILED", "error_msg": f"auth {token} rejected", token: token}],
    )
    [report] = protecto_client.fetch_status_batch(["echo-1"])
    assert report.error_message == "auth *** rejected"
    assert token not in repr(report.raw)
    assert report.raw["***"] == "***"


def test_retry_warnings_never_contain_the_token(simulator, protecto_client, caplog):
    simulator.fail_next(1, kind="500")

    with caplog.at_level(logging.WARNING, logger="protecto.client"):
        protecto_client.fetch_status_batch(["scan-a"])

    assert any("retrying" in record.getMessage() for record in caplog.records)
    assert all(simulator.config.token not in record.getMessage() for record in caplog.records)


def test_ids_are_sent_in_batches_of_the_configured_size_in_order(simulator, protecto_client):
    ids = [f"scan-{n:02d}" for n in range(25)]

    results = list(protecto_client.fetch_statuses(ids))

    assert simulator.status_requests == [ids[:10], ids[10:20], ids[20:]]
    assert [batch for batch, _ in results] == [ids[:10], ids[10:20], ids[20:]]
    reported = [report.tracking_id for _, reports in results for report in reports]
    assert reported == ids
    assert protecto_client.requests_made == 3


def test_an_empty_batch_sends_nothing(simulator, protecto_client):
    assert protecto_client.fetch_status_batch([]) == []
    assert list(protecto_client.fetch_statuses([])) == []
    assert protecto_client.requests_made == 0 and simulator.request_count == 0


def test_a_500_is_retried_and_the_next_answer_is_used(simulator, protecto_client):
    simulator.add_scan("scan-a", status="SUCCESS")
    simulator.fail_next(2, kind="500")

    [report] = protecto_client.fetch_status_batch(["scan-a"])

    assert report.status == "SUCCESS"
    assert protecto_client.requests_made == 3
    assert simulator.status_requests == [["scan-a"]] * 3


def test_a_500_that_persists_is_unavailable_after_the_retries(simulator, protecto_client):
    simulator.configure(error_rate=1.0)

    with pytest.raises(ProtectoUnavailable) as caught:
        protecto_client.fetch_status_batch(["scan-a"])

    assert caught.value.status_code == 500
    assert caught.value.permanent is False
    assert "HTTP 500" in str(caught.value) and "Internal server error" in str(caught.value)
    assert "after 3 attempts" in str(caught.value)
    assert protecto_client.requests_made == 3 == simulator.request_count


def test_a_429_waits_for_retry_after_before_retrying(simulator, protecto_client):
    simulator.configure(retry_after=0.4)
    simulator.fail_next(1, kind="429")

    started = time.monotonic()
    protecto_client.fetch_status_batch(["scan-a"])
    elapsed = time.monotonic() - started

    # The client's own backoff is 0.01 s, so only Retry-After explains a wait this long.
    assert elapsed >= 0.4
    assert elapsed < 1.5
    assert protecto_client.requests_made == 2


def test_a_long_retry_after_is_capped(simulator):
    simulator.configure(retry_after=30)
    simulator.fail_next(1, kind="429")
    client = client_for(simulator, max_retry_after=0.05)

    started = time.monotonic()
    client.fetch_status_batch(["scan-a"])

    assert time.monotonic() - started < 1.0
    assert client.requests_made == 2


def test_a_persistent_429_is_unavailable_with_its_status_code(simulator):
    simulator.configure(rate_limit_rate=1.0, retry_after=0)
    client = client_for(simulator, max_retries=1)

    with pytest.raises(ProtectoUnavailable) as caught:
        client.fetch_status_batch(["scan-a"])

    assert caught.value.status_code == 429
    assert client.requests_made == 2


def test_malformed_json_is_retried_and_a_good_answer_then_used(simulator, protecto_client):
    simulator.add_scan("scan-a", status="IN-PROGRESS")
    simulator.fail_next(1, kind="malformed")

    [report] = protecto_client.fetch_status_batch(["scan-a"])

    assert report.status == "IN-PROGRESS"
    assert protecto_client.requests_made == 2


def test_persistent_malformed_json_is_a_bad_answer_with_an_excerpt(simulator, protecto_client):
    simulator.configure(malformed_rate=1.0)

    with pytest.raises(ProtectoBadAnswer) as caught:
        protecto_client.fetch_status_batch(["scan-a"])

    message = str(caught.value)
    assert message.startswith("answer was not valid JSON: {")
    assert len(message) < 200
    assert protecto_client.requests_made == 3


def test_a_hanging_answer_times_out_as_unavailable(simulator):
    simulator.fail_next(5, kind="hang")  # hang_seconds is 2 in the test config
    client = client_for(simulator, timeout=0.3, max_retries=1)

    started = time.monotonic()
    with pytest.raises(ProtectoUnavailable) as caught:
        client.fetch_status_batch(["scan-a"])

    assert time.monotonic() - started < 1.5
    assert "read timeout" in str(caught.value)
    assert client.requests_made == 2


def test_a_dropped_connection_is_retried(simulator, protecto_client):
    simulator.add_scan("scan-a", status="PENDING")
    simulator.fail_next(1, kind="drop")

    [report] = protecto_client.fetch_status_batch(["scan-a"])

    assert report.status == "PENDING"
    assert protecto_client.requests_made == 2


def test_nothing_listening_is_unavailable_after_the_retries():
    client = ProtectoClient(
        base_url=f"http://127.0.0.1:{free_port()}",
        token="t0ken-never-shown",
        timeout=1,
        backoff=0.01,
        max_retries=2,
    )

    with pytest.raises(ProtectoUnavailable) as caught:
        client.fetch_status_batch(["scan-a"])

    assert "connection refused" in str(caught.value).lower()
    assert "t0ken-never-shown" not in str(caught.value)
    assert caught.value.status_code is None
    assert client.requests_made == 3


def test_a_misconfigured_path_is_a_bad_answer_without_retry(simulator):
    client = client_for(simulator, status_path="/no-such-endpoint", max_retries=3)

    with pytest.raises(ProtectoBadAnswer) as caught:
        client.fetch_status_batch(["scan-a"])

    assert caught.value.status_code == 404
    assert "HTTP 404" in str(caught.value)
    assert client.requests_made == 1


def test_success_false_in_a_200_answer_reaches_the_operator(simulator, protecto_client):
    simulator.fail_next(1, kind="success-false")

    with pytest.raises(ProtectoBadAnswer, match="paid subscription"):
        protecto_client.fetch_status_batch(["scan-a"])

    assert protecto_client.requests_made == 1


def test_fetch_statuses_goes_on_after_a_failed_batch(simulator):
    ids = [f"scan-{n:02d}" for n in range(25)]
    client = client_for(simulator, batch_size=10, max_retries=0)
    simulator.fail_next(1, kind="500")

    results = list(client.fetch_statuses(ids))

    assert [batch for batch, _ in results] == [ids[:10], ids[10:20], ids[20:]]
    assert isinstance(results[0][1], ProtectoUnavailable)
    assert [len(outcome) for _, outcome in results[1:]] == [10, 5]  # type: ignore[arg-type]
    assert client.requests_made == 3


def test_fetch_statuses_stops_sending_after_a_refused_token(simulator):
    client = client_for(simulator, token="not-the-token", batch_size=10)

    results = list(client.fetch_statuses([f"scan-{n}" for n in range(25)]))

    assert len(results) == 3
    assert all(isinstance(outcome, ProtectoAuthError) for _, outcome in results)
    assert client.requests_made == 1


@pytest.mark.parametrize("shape", ["2024", "2025"])
@pytest.mark.parametrize(
    ("status_path", "submit_path"),
    [("/data-scan-status", "/data-scan-async"), ("/data-scan/status", "/data-scan/data-scan-async")],
)
def test_both_shapes_on_both_path_spellings(simulator, shape, status_path, submit_path):
    simulator.configure(shape=shape)
    submitted = datetime.now(UTC) - timedelta(minutes=5)
    simulator.add_scan(
        "scan-failed",
        status="FAILED",
        submitted_at=submitted,
        error_msg="Quota exceeded for tenant: 500000 samples per day",
        data_source="salesforce",
        object_name=["CustomerDB", "Customerstable"],
    )
    client = client_for(simulator, status_path=status_path, submit_path=submit_path)

    [report] = client.fetch_status_batch(["scan-failed"])
    new_id = client.submit_scan(data_source_name="snowflake", object_name=["SalesDB", "orders"])

    assert report.status == "FAILED"
    assert report.error_message == "Quota exceeded for tenant: 500000 samples per day"
    assert report.submitted_at is not None and abs(report.submitted_at - submitted) < timedelta(milliseconds=1)
    assert report.started_at is not None and report.ended_at is not None
    if shape == "2025":
        assert "request_status" in report.raw and "status" not in report.raw
        assert (report.data_source, report.object_path) == ("salesforce", "CustomerDB/Customerstable")
        assert len(new_id) == 50
    else:
        assert "status" in report.raw
        assert (report.data_source, report.object_path) == ("", "")
        assert len(new_id) == 36
    assert simulator.submit_requests[-1][0]["data_source_name"] == "snowflake"


def test_a_single_tracking_id_string_is_accepted_as_a_status_body(simulator):
    simulator.add_scan("scan-a", status="IN-PROGRESS")

    response = requests.put(
        f"{simulator.url}/data-scan-status",
        json="scan-a",
        headers={"Authorization": f"Bearer {simulator.config.token}"},
        timeout=2,
    )

    assert response.status_code == 200
    assert [item["tracking_id"] for item in response.json()["data"]] == ["scan-a"]
    assert simulator.status_requests == [["scan-a"]]


def test_a_submitted_scan_shows_up_in_a_status_answer_and_progresses(simulator, protecto_client):
    tracking_id = protecto_client.submit_scan(
        data_source_name="salesforce",
        object_name=["CustomerDB", "Marketingschema", "Customerstable"],
        data_samples=[{"column_name": "email", "samples": ["a@example.com"]}],
    )
    [first] = protecto_client.fetch_status_batch([tracking_id])
    # The test config plans at most 0.4 s pending and 0.4 s running.
    time.sleep(0.9)
    [later] = protecto_client.fetch_status_batch([tracking_id])

    assert first.tracking_id == tracking_id
    assert first.status == "PENDING" and first.started_at is None
    assert later.status in ("SUCCESS", "FAILED")
    assert later.submitted_at == first.submitted_at
    assert later.started_at is not None and later.ended_at is not None and later.started_at <= later.ended_at
    assert simulator.submit_requests[0][0]["data_samples"] == [
        {"column_name": "email", "samples": ["a@example.com"]}
    ]


def test_submit_errors_are_handled_like_status_errors(simulator, protecto_client):
    simulator.fail_next(1, kind="500")
    simulator.fail_next(1, kind="malformed")

    tracking_id = protecto_client.submit_scan(data_source_name="s3", object_name=["bucket"])

    assert tracking_id
    assert protecto_client.requests_made == 3


def test_unknown_ids_are_left_out_when_the_service_does_not_know_them(simulator, protecto_client):
    simulator.configure(accept_unknown_ids=False)
    simulator.add_scan("known", status="PENDING")

    reports = protecto_client.fetch_status_batch(["known", "never-submitted"])

    assert [report.tracking_id for report in reports] == ["known"]


def test_unknown_ids_are_created_on_first_sight_by_default(simulator, protecto_client):
    [report] = protecto_client.fetch_status_batch(["first-sight"])

    assert report.status == "PENDING"
    assert report.submitted_at is not None
    assert abs(report.submitted_at - datetime.now(UTC)) < timedelta(seconds=5)


def test_raw_status_quirks_come_through_http_intact(simulator, protecto_client):
    simulator.add_scan("spaced", status="SUCCESS ")
    simulator.add_scan("queued", status="QUEUED")

    reports = {report.tracking_id: report for report in protecto_client.fetch_status_batch(["spaced", "queued"])}

    assert (reports["spaced"].status, reports["spaced"].raw_status) == ("SUCCESS", "SUCCESS ")
    assert (reports["queued"].status, reports["queued"].raw_status) == (UNKNOWN, "QUEUED")


def test_an_unsendable_url_is_a_protecto_error_not_a_crash():
    client = ProtectoClient(base_url="not a url", token="tok", max_retries=2, backoff=0.01)

    with pytest.raises(ProtectoError):
        client.fetch_status_batch(["scan-a"])

    assert client.requests_made == 1


def test_the_client_never_shows_its_token_in_its_repr():
    client = ProtectoClient(base_url="https://user:pw@tenant.example/api/vault", token="s3cret-token")

    assert "s3cret-token" not in repr(client) and "pw" not in repr(client)


def test_the_simulator_fixture_works_without_the_database(simulator, protecto_client):
    # pytest-django blocks database access in tests without the django_db mark; reaching here proves the
    # fixtures stayed clear of it. A scan is still answered end to end.
    simulator.add_scan("scan-a", status="SUCCESS")

    assert protecto_client.fetch_status_batch(["scan-a"])[0].status == "SUCCESS"


@pytest.fixture
def slow_simulator():
    with ProtectoSimulator(fast_config(latency=0.2)) as sim:
        yield sim


def test_latency_within_the_timeout_is_waited_for(slow_simulator):
    client = client_for(slow_simulator, timeout=1, max_retries=0)

    started = time.monotonic()
    [report] = client.fetch_status_batch(["scan-a"])

    assert report.tracking_id == "scan-a"
    assert time.monotonic() - started >= 0.2
