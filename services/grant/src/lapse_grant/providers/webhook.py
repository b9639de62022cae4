"""webhook: any other system, through signed HTTP calls it answers.

Lapse POSTs JSON `{"action": "grant" | "revoke" | "verify", "grant_id", "subject", "role",
"expires_at"}` to the target's URL with:
- `Lapse-Timestamp`: Unix seconds; `Lapse-Signature`: `v1=` + hex HMAC-SHA256 over
  `<timestamp>.<body>` with the shared secret. The receiver checks both with `verify_signature`
  (constant-time, and a replay window: an old timestamp is refused);
- `Idempotency-Key`: `<grant_id>:<action>`, the same on every retry of one operation.
A 2xx answer means done; `verify` answers `{"present": true|false}`. 5xx, 408, 429 and network
errors are retried; other 4xx are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lapse_grant.providers import Access, ProviderError, Provisioned, generic_subject_problem, parse_settings
from lapse_grant.providers.http_target import raise_for_target, unreachable

SIGNATURE_HEADER = "Lapse-Signature"
TIMESTAMP_HEADER = "Lapse-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> bool:
    """For receivers: the body came from Lapse and is recent (older ones may be replays)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


class WebhookTarget(BaseModel):
    """`target:` settings of a webhook resource in the catalogue."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Endpoint that performs grant, revoke and verify.")
    secret: str = Field(min_length=16, description="Shared HMAC secret; use ${VAR}.")
    timeout_seconds: float = Field(10.0, gt=0)


class WebhookProvider:
    settings_model: ClassVar[type[BaseModel]] = WebhookTarget
    shared_access: ClassVar[bool] = True

    def __init__(self) -> None:
        self._client = httpx.AsyncClient()

    def access_problem(self, target: dict[str, Any], access: Access) -> str | None:
        """Subject and role go to another system as JSON: bounded and printable."""
        if generic_subject_problem(access.role) is not None:
            return f"role {access.role[:80]!r} is malformed"
        return generic_subject_problem(access.subject)

    async def _post(self, target: dict[str, Any], access: Access, action: str) -> httpx.Response:
        settings = parse_settings(WebhookTarget, "webhook", target)
        body = json.dumps(
            {
                "action": action,
                "grant_id": str(access.grant_id),
                "subject": access.subject,
                "role": access.role,
                "expires_at": access.expires_at.isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(settings.secret, timestamp, body),
            IDEMPOTENCY_HEADER: f"{access.grant_id}:{action}",
        }
        try:
            response = await self._client.post(
                settings.url, content=body, headers=headers, timeout=settings.timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise unreachable(exc, f"webhook {action}") from None
        raise_for_target(response, f"webhook {action}")
        return response

    async def grant(self, target: dict[str, Any], access: Access) -> Provisioned:
        await self._post(target, access, "grant")
        return Provisioned()

    async def revoke(self, target: dict[str, Any], access: Access) -> None:
        await self._post(target, access, "revoke")

    async def verify(self, target: dict[str, Any], access: Access) -> bool:
        response = await self._post(target, access, "verify")
        try:
            present = response.json()["present"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(
                'webhook verify: the answer must be JSON {"present": true|false}', transient=True
            ) from None
        if not isinstance(present, bool):
            raise ProviderError('webhook verify: "present" must be true or false', transient=True)
        return present

    async def close(self) -> None:
        await self._client.aclose()
