"""Parsing and formatting of access durations: ISO 8601 ("PT30M") or short form ("30m", "1h30m")."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, TypeAdapter, ValidationError

_SHORT = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_ISO = TypeAdapter(timedelta)


def parse_duration(value: object) -> timedelta:
    """Accept "30m", "1h30m", "2d", ISO 8601 ("PT30M", "P1D") or a timedelta.

    Raises ValueError with a message a requester can act on.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        text = value.strip()
        match = _SHORT.match(text)
        if text and match and any(match.groupdict().values()):
            parts = {k: int(v) for k, v in match.groupdict().items() if v}
            try:
                result = timedelta(
                    days=parts.get("d", 0),
                    hours=parts.get("h", 0),
                    minutes=parts.get("m", 0),
                    seconds=parts.get("s", 0),
                )
            except OverflowError:
                # Not a ValueError, so pydantic would let it escape (HTTP 500, a crashed load).
                raise ValueError(f"'{value}' is too long to be a duration") from None
        elif text.upper().startswith("P"):
            try:
                result = _ISO.validate_python(text.upper())
            except ValidationError:
                raise ValueError(
                    f"'{value}' is not an ISO 8601 duration; use e.g. 'PT30M' or '30m'"
                ) from None
        else:
            raise ValueError(f"'{value}' is not a duration; use e.g. 'PT30M', '30m' or '1h30m'")
    else:
        raise ValueError("a duration must be a string such as 'PT30M' or '30m'")
    if result.total_seconds() <= 0:
        raise ValueError("a duration must be longer than zero")
    if result.microseconds:
        raise ValueError("a duration is counted in whole seconds")
    return result


def format_duration(value: timedelta) -> str:
    """ISO 8601 form of a whole-second duration, e.g. PT1H30M."""
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    clock += f"{seconds}S" if seconds else ""
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A pydantic field type: parses both forms, serialises as ISO 8601."""


def format_short(seconds: int) -> str:
    """The short form people type (`1h30m`, `2d`, `45s`), as accepted by `parse_duration`."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
