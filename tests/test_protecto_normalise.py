"""Reading Protecto's answers: statuses, timestamps, errors and both answer shapes (no HTTP here)."""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone

import pytest

from protecto import (
    UNKNOWN,
    ProtectoBadAnswer,
    normalise_status,
    parse_status_answer,
    parse_submit_answer,
    parse_timestamp,
)
from protecto.answers import retry_after_seconds

ID_2024 = "47882682-9f38-4f45-afec-daadaa1b230b"
ID_2025 = "354d2d30-178a-4220-9ce5-97908aa5713015052025072328"


def answer_2024(**item_changes: object) -> dict:
    item = {
        "tracking_id": ID_2024,
        "status": "PENDING ",
        "submitted_at": "2023-11-18 06:20:38.346615",
        "process_started_at": "-",
        "process_ended_at": "-",
        "error_msg": "-",
    }
    item.update(item_changes)
    return {"data": [item], "success": "true", "error": {"message": ""}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PENDING", "PENDING"),
        ("PENDING ", "PENDING"),
        (" success\n", "SUCCESS"),
        ("Failed", "FAILED"),
        ("IN-PROGRESS", "IN-PROGRESS"),
        ("IN_PROGRESS", "IN-PROGRESS"),
        ("IN PROGRESS", "IN-PROGRESS"),
        ("in-progress ", "IN-PROGRESS"),
        ("in_progress", "IN-PROGRESS"),
    ],
)
def test_known_statuses_are_normalised_and_the_raw_text_is_kept(value, expected):
    assert normalise_status(value) == (expected, value)


@pytest.mark.parametrize("value", ["QUEUED", "CANCELLED ", "DONE", "PENDINGX", "IN--PROGRESS"])
def test_unknown_status_values_are_unknown_with_the_raw_text_verbatim(value):
    assert normalise_status(value) == (UNKNOWN, value)


def test_a_missing_status_is_unknown_with_empty_raw_text():
    assert normalise_status(None) == (UNKNOWN, "")


@pytest.mark.parametrize("value", [None, "", "-", "   ", " - ", 12345, "yesterday", "2023-13-45 99:00:00"])
def test_absent_or_unreadable_timestamps_are_none(value):
    assert parse_timestamp(value, tz=UTC) is None


@pytest.mark.parametrize(
    "value",
    ["2023-11-18 06:20:38.346615", "2023-11-18T06:20:38.346615", " 2023-11-18 06:20:38.346615 "],
)
def test_a_naive_timestamp_is_read_as_utc_by_default(value):
    assert parse_timestamp(value) == datetime(2023, 11, 18, 6, 20, 38, 346615, tzinfo=UTC)


def test_a_timestamp_without_fraction_is_accepted():
    assert parse_timestamp("2023-11-18 06:20:38") == datetime(2023, 11, 18, 6, 20, 38, tzinfo=UTC)


def test_a_naive_timestamp_is_read_in_the_configured_zone():
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")

    parsed = parse_timestamp("2023-11-18 06:20:38.346615", tz=kolkata)

    assert parsed is not None and parsed.tzinfo is not None
    # 06:20 in Kolkata (UTC+05:30) is 00:50 UTC.
    assert parsed == datetime(2023, 11, 18, 0, 50, 38, 346615, tzinfo=UTC)


def test_a_timestamp_with_an_offset_keeps_it_whatever_the_configured_zone():
    parsed = parse_timestamp("2023-11-18 06:20:38+02:00", tz=zoneinfo.ZoneInfo("Asia/Kolkata"))

    assert parsed == datetime(2023, 11, 18, 4, 20, 38, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=2)


def test_the_configured_zone_applies_to_every_timestamp_of_an_answer():
    plus_one = timezone(timedelta(hours=1))
    payload = answer_2024(process_started_at="2023-11-18 07:00:00", process_ended_at="2023-11-18 07:30:00.5")

    [report] = parse_status_answer(payload, tz=plus_one)

    assert report.submitted_at == datetime(2023, 11, 18, 5, 20, 38, 346615, tzinfo=UTC)
    assert report.started_at == datetime(2023, 11, 18, 6, 0, tzinfo=UTC)
    assert report.ended_at == datetime(2023, 11, 18, 6, 30, 0, 500000, tzinfo=UTC)


def test_the_documented_2024_item_is_read_with_its_quirks():
    [report] = parse_status_answer(answer_2024())

    assert report.tracking_id == ID_2024
    assert (report.status, report.raw_status) == ("PENDING", "PENDING ")
    assert report.submitted_at == datetime(2023, 11, 18, 6, 20, 38, 346615, tzinfo=UTC)
    assert report.started_at is None and report.ended_at is None
    assert report.error_message == ""
    assert (report.data_source, report.object_path) == ("", "")
    assert report.raw == answer_2024()["data"][0]


@pytest.mark.parametrize("value", ["-", "", None, "  ", " - "])
def test_dash_empty_and_null_error_messages_mean_no_error(value):
    [report] = parse_status_answer(answer_2024(status="SUCCESS ", error_msg=value))

    assert report.error_message == ""


def test_a_real_error_message_reaches_the_report():
    payload = answer_2024(status="FAILED", error_msg="Permission denied reading object CustomerDB/Customerstable")

    [report] = parse_status_answer(payload)

    assert report.status == "FAILED"
    assert report.error_message == "Permission denied reading object CustomerDB/Customerstable"


def test_a_50_character_tracking_id_is_kept_intact_and_stripped():
    assert len(ID_2025) == 50

    [report] = parse_status_answer(answer_2024(tracking_id=f" {ID_2025} "))

    assert report.tracking_id == ID_2025


@pytest.mark.parametrize("flag", ["true", "True", "TRUE", True])
def test_success_may_be_a_string_or_a_boolean(flag):
    payload = answer_2024()
    payload["success"] = flag

    assert [report.tracking_id for report in parse_status_answer(payload)] == [ID_2024]


@pytest.mark.parametrize("flag", ["false", "False", False])
def test_success_false_raises_with_protectos_message(flag):
    payload = {"data": None, "success": flag, "error": {"message": "Subscription required for Data Scan APIs"}}

    with pytest.raises(ProtectoBadAnswer, match="Subscription required for Data Scan APIs"):
        parse_status_answer(payload)


def test_an_unrecognised_success_value_is_a_bad_answer():
    payload = answer_2024()
    payload["success"] = "maybe"

    with pytest.raises(ProtectoBadAnswer, match="success"):
        parse_status_answer(payload)


def test_the_2025_shape_with_request_status_and_input_payload():
    payload = {
        "data": [
            {
                "tracking_id": ID_2025,
                "request_status": "IN_PROGRESS",
                "submitted_at": "2025-05-15 07:23:28.000001",
                "process_started_at": "2025-05-15 07:24:00.000000",
                "process_ended_at": None,
                "error_msg": "",
                "input_payload": {
                    "data_source_name": "salesforce",
                    "object_name": ["CustomerDB", "Marketingschema", "Customerstable"],
                    "data_samples": [{"column_name": "email", "samples": ["a@example.com"]}],
                },
            }
        ],
        "success": True,
        "error": {"message": ""},
    }

    [report] = parse_status_answer(payload)

    assert report.tracking_id == ID_2025
    assert (report.status, report.raw_status) == ("IN-PROGRESS", "IN_PROGRESS")
    assert report.started_at == datetime(2025, 5, 15, 7, 24, tzinfo=UTC)
    assert report.ended_at is None
    assert report.data_source == "salesforce"
    assert report.object_path == "CustomerDB/Marketingschema/Customerstable"
    assert report.error_message == ""


def test_an_object_name_given_as_a_string_is_used_as_the_path():
    payload = answer_2024(input_payload={"data_source_name": "s3", "object_name": "bucket/key.csv"})

    [report] = parse_status_answer(payload)

    assert (report.data_source, report.object_path) == ("s3", "bucket/key.csv")


@pytest.mark.parametrize("data", ["oops", 42, None, True])
def test_data_that_is_not_a_list_is_a_bad_answer(data):
    with pytest.raises(ProtectoBadAnswer, match="data"):
        parse_status_answer({"data": data, "success": "true", "error": {"message": ""}})


@pytest.mark.parametrize("payload", [[], "text", None, 3])
def test_an_answer_that_is_not_an_object_is_a_bad_answer(payload):
    with pytest.raises(ProtectoBadAnswer):
        parse_status_answer(payload)


def test_a_single_item_object_in_data_is_read_as_a_list_of_one():
    payload = answer_2024()
    payload["data"] = payload["data"][0]

    assert [report.tracking_id for report in parse_status_answer(payload)] == [ID_2024]


def test_items_that_are_not_objects_or_lack_an_id_are_skipped_without_losing_the_others():
    good = answer_2024()["data"][0]
    payload = {
        "data": [
            "just a string",
            None,
            7,
            {"status": "SUCCESS"},
            {"tracking_id": "   ", "status": "FAILED"},
            good,
        ],
        "success": "true",
        "error": {"message": ""},
    }

    assert [report.tracking_id for report in parse_status_answer(payload)] == [ID_2024]


def test_odd_field_types_in_an_item_never_crash_the_reading():
    payload = answer_2024(
        status={"nested": "value"}, submitted_at=["2023-11-18"], error_msg=None, input_payload="not an object"
    )

    [report] = parse_status_answer(payload)

    assert report.status == UNKNOWN
    assert report.submitted_at is None
    assert (report.data_source, report.object_path) == ("", "")


def test_reports_keep_the_raw_item_as_json_serialisable_data():
    [report] = parse_status_answer(answer_2024(status="QUEUED"))

    assert (report.status, report.raw_status) == (UNKNOWN, "QUEUED")
    assert json.loads(json.dumps(report.raw))["status"] == "QUEUED"


def test_submit_answer_gives_the_tracking_id():
    payload = {"data": {"tracking_id": ID_2024}, "success": "true", "error": {"message": ""}}

    assert parse_submit_answer(payload) == ID_2024


def test_submit_answer_without_a_tracking_id_is_a_bad_answer():
    with pytest.raises(ProtectoBadAnswer, match="tracking_id"):
        parse_submit_answer({"data": {}, "success": "true", "error": {"message": ""}})


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.25", 0.25), (None, 0.5), ("", 0.5), ("soon", 0.5), ("-4", 0.5), ("120", 30.0)],
)
def test_retry_after_reads_seconds_caps_them_and_falls_back_to_the_backoff(header, expected):
    assert retry_after_seconds(header, fallback=0.5, cap=30.0) == expected


def test_retry_after_accepts_the_http_date_form():
    now = datetime(2025, 5, 15, 7, 0, 0, tzinfo=UTC)

    assert retry_after_seconds("Thu, 15 May 2025 07:00:10 GMT", fallback=0.5, cap=30.0, now=now) == 10.0
