"""HTTP calls to targets, shared by the rabbitmq-permissions and webhook providers."""

from __future__ import annotations

import httpx

from lapse_grant.providers import ProviderError


def raise_for_target(response: httpx.Response, what: str) -> None:
    """A non-2xx answer as a ProviderError: 5xx, 408 and 429 may pass, other 4xx will not."""
    if response.is_success:
        return
    transient = response.status_code >= 500 or response.status_code in (408, 429)
    # The body may echo what we sent; keep only the status and a short, safe reason.
    raise ProviderError(f"{what}: HTTP {response.status_code} {response.reason_phrase}", transient=transient)


def unreachable(exc: httpx.HTTPError, what: str) -> ProviderError:
    return ProviderError(f"{what}: {type(exc).__name__}", transient=True)
