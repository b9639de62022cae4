"""W3C trace context (`traceparent`) carried through HTTP requests, messages and the outbox.

One trace id follows a request across services: the HTTP edge starts a trace (or continues the
caller's), the consumer middleware continues the one in a message's headers, and everything
published meanwhile (outbox rows, direct publishes) carries a child of it. Logs get `trace_id`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog

HEADER = "traceparent"
_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_current: ContextVar[str | None] = ContextVar("lapse_traceparent", default=None)


def new_traceparent() -> str:
    """A fresh trace: random trace id and span id, sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a well-formed traceparent (all-zero ids are invalid per the spec), else None."""
    match = _FORMAT.match(traceparent.strip().lower()) if traceparent else None
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1)


def continue_or_start(incoming: str | None) -> str:
    """A span of this hop: a child of `incoming` when it is valid, else the root of a new trace."""
    tid = trace_id(incoming)
    if tid is None or incoming is None:
        return new_traceparent()
    flags = incoming.strip().lower()[-2:]
    return f"00-{tid}-{secrets.token_hex(8)}-{flags}"


def current() -> str | None:
    return _current.get()


def outgoing() -> str | None:
    """The traceparent for a message published now: a child of the current span, if any."""
    span = _current.get()
    return continue_or_start(span) if span is not None else None


@contextmanager
def span(traceparent: str) -> Iterator[None]:
    """Make `traceparent` current (and `trace_id` part of every log line) for the block."""
    token = _current.set(traceparent)
    with structlog.contextvars.bound_contextvars(trace_id=trace_id(traceparent)):
        try:
            yield
        finally:
            _current.reset(token)
