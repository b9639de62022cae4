"""A small synchronous client of the Lapse HTTP APIs that turns every failure into a `Failure`
carrying the message to show and the documented exit code."""

from __future__ import annotations

from typing import Any

import httpx

from lapse_cli.exits import Exit, for_status
from lapse_cli.settings import Profile

USER_AGENT = "lapse-cli/0.1"


class Failure(Exception):
    """What went wrong, for `error: ...` on stderr, and the exit code."""

    def __init__(self, message: str, code: Exit, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.details = message, code, details or []


def problem(response: httpx.Response) -> Failure:
    """An RFC 9457 problem document (or any other error answer) as a Failure."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body:
        title, detail = str(body["title"]), str(body.get("detail") or "")
        errors = body.get("errors") or []
        details = [f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    else:
        title, detail, details = response.reason_phrase or str(response.status_code), response.text[:300], []
    message = f"{title}: {detail}" if detail else title
    # The field errors usually repeat the detail; show them only when they add something.
    details = [d for d in details if d.split(": ", 1)[-1] not in detail]
    return Failure(message, for_status(response.status_code), details=details)


class Api:
    """One service's API, authenticated with the profile's token."""

    def __init__(self, profile: Profile, service: str, *, timeout: float = 15) -> None:
        if not profile.token:
            raise Failure("not logged in: run `lapse login` (or set LAPSE_TOKEN)", Exit.AUTH)
        self.service = service
        self.base = profile.url(service).rstrip("/")
        self._client = httpx.Client(
            base_url=self.base,
            timeout=timeout,
            headers={"Authorization": f"Bearer {profile.token}", "User-Agent": USER_AGENT},
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Failure(
                f"cannot reach the {self.service} service at {self.base}: {exc or type(exc).__name__}",
                Exit.ERROR,
            ) from None
        if response.is_error:
            raise problem(response)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=body)
