"""Unit tests of lapse_shared.durations: the short form, ISO 8601, and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from lapse_shared.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("45s", timedelta(seconds=45)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
        ("  30m  ", timedelta(minutes=30)),
    ],
)
def test_short_form_is_parsed(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT30M", timedelta(minutes=30)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1D", timedelta(days=1)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("pt30m", timedelta(minutes=30)),
    ],
)
def test_iso_8601_form_is_parsed(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_timedelta_is_passed_through() -> None:
    assert parse_duration(timedelta(minutes=5)) == timedelta(minutes=5)


@pytest.mark.parametrize("text", ["soon", "", "30", "1H", "m", "1.5h", "-5m", "PT-5M", "P", "PT"])
def test_text_that_is_not_a_duration_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_rejection_message_shows_the_input_and_an_example() -> None:
    with pytest.raises(ValueError, match="'soon'") as caught:
        parse_duration("soon")
    assert "30m" in str(caught.value)


@pytest.mark.parametrize("text", ["0m", "0s", "0d0h0m0s", "PT0S", "P0D"])
def test_zero_duration_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(text)


def test_zero_or_negative_timedelta_is_rejected() -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(timedelta(0))
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration(timedelta(minutes=-5))


@pytest.mark.parametrize("value", ["PT0.5S", "PT1.5S", "PT1M0.000001S", timedelta(seconds=1, microseconds=1)])
def test_fractional_seconds_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        parse_duration(value)


@pytest.mark.parametrize("value", [30, 1.5, None, True, ["30m"]])
def test_non_string_values_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(minutes=30), "PT30M"),
        (timedelta(hours=1, minutes=30), "PT1H30M"),
        (timedelta(days=1), "P1D"),
        (timedelta(days=1, seconds=1), "P1DT1S"),
        (timedelta(seconds=59), "PT59S"),
        (timedelta(hours=2), "PT2H"),
        (timedelta(0), "PT0S"),
    ],
)
def test_format_duration_gives_iso_8601(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        timedelta(seconds=1),
        timedelta(minutes=30),
        timedelta(hours=1, minutes=30),
        timedelta(days=3, hours=4, minutes=5, seconds=6),
        timedelta(days=400),
        timedelta(seconds=86399),
    ],
)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["30m", "1h30m", "P1D", "2d3s"])
def test_parse_then_format_then_parse_is_stable(text: str) -> None:
    parsed = parse_duration(text)
    assert parse_duration(format_duration(parsed)) == parsed


class _Window(BaseModel):
    length: Duration


def test_duration_field_parses_short_form_and_serialises_as_iso() -> None:
    window = _Window.model_validate({"length": "1h30m"})
    assert window.length == timedelta(hours=1, minutes=30)
    assert window.model_dump(mode="json") == {"length": "PT1H30M"}
    assert window.model_dump() == {"length": timedelta(hours=1, minutes=30)}


def test_duration_field_reports_the_problem_as_a_validation_error() -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        _Window.model_validate({"length": "0m"})


@pytest.mark.parametrize("text", ["1000000000d", "99999999999999d", "999999999999999999999h"])
def test_a_duration_too_long_for_a_timedelta_is_a_validation_error_not_a_crash(text: str) -> None:
    # Attack: any caller of POST /v1/requests (or a policy file's max_duration) sent "1000000000d";
    # timedelta raised OverflowError, which pydantic does not turn into a validation error, so the
    # API answered 500 instead of 422 and a policy load failed with a traceback.
    class Ask(BaseModel):
        duration: Duration

    with pytest.raises(ValueError, match="too long"):
        Ask.model_validate({"duration": text})
