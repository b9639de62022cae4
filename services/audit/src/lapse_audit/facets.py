"""Who and what an event is about, read from its data, for the query API's filters. Pure.

Events name the person in different fields (`requester` as an object or a string, `subject` on
grants) and some (`policy.decided`) name nobody; the query API therefore filters by these facets
request by request (see repository.query), so a person's filter also returns the decision events
of their requests.
"""

from __future__ import annotations

from typing import Any


def principal(event: dict[str, Any]) -> str | None:
    """The person or service principal who asked for or holds the access."""
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    requester = data.get("requester")
    if isinstance(requester, dict) and isinstance(requester.get("subject"), str):
        return str(requester["subject"])
    if isinstance(requester, str):
        return requester
    if event.get("type", "").startswith("grant.") and isinstance(data.get("subject"), str):
        return str(data["subject"])
    return None


def resource(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    if isinstance(data, dict) and isinstance(data.get("resource"), str):
        return str(data["resource"])
    return None
