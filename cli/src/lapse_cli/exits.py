"""Exit codes of the request and review commands, one set for every command so scripts can rely on them."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    """Done; for `request --wait`/`wait`: the access is active (or was, and has ended)."""
    ERROR = 1
    """Anything else: a service unreachable or failing, an unexpected answer."""
    USAGE = 2
    """A wrong option or argument, or input the API refused as invalid (422)."""
    AUTH = 3
    """Not logged in, a token the API does not accept (401), or not allowed (403)."""
    NOT_FOUND = 4
    """No such request or grant visible to you (404), or already gone (410)."""
    DENIED = 5
    """The request was denied (by policy or a reviewer)."""
    ENDED_OTHERWISE = 6
    """The request was cancelled, expired undecided, or provisioning failed."""
    TIMED_OUT = 7
    """`--wait`/`wait` gave up before the request was decided and active (it goes on)."""
    CONFLICT = 8
    """The request is not in a state that allows this (409), e.g. approving a decided request."""


HELP = (
    "Exit codes: 0 ok (with --wait: the access is active); 1 error (service unreachable or failing);"
    " 2 usage or invalid input; 3 not logged in, bad token or forbidden; 4 not found;"
    " 5 denied; 6 cancelled, expired or failed; 7 timed out waiting; 8 not in a state that allows it."
)


def for_status(status: int) -> Exit:
    """The exit code of an HTTP error status."""
    if status in (401, 403):
        return Exit.AUTH
    if status in (404, 410):
        return Exit.NOT_FOUND
    if status == 409:
        return Exit.CONFLICT
    if status in (400, 422):
        return Exit.USAGE
    return Exit.ERROR


def for_state(state: str) -> Exit:
    """The exit code of waiting on a request that reached `state`."""
    if state == "denied":
        return Exit.DENIED
    if state in ("cancelled", "expired", "failed"):
        return Exit.ENDED_OTHERWISE
    return Exit.OK
