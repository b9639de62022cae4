"""Who is calling: one `authenticate` check, behind which OIDC tokens and static tokens live."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Protocol

import structlog
import yaml
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lapse_shared.http.problems import ProblemError

log = structlog.get_logger("lapse.http.identity")


class Identity(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    groups: frozenset[str] = frozenset()
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Identity attributes (e.g. department) policies may test."
    )

    def in_any(self, groups: frozenset[str] | set[str] | list[str]) -> bool:
        return not self.groups.isdisjoint(groups)


class AuthenticationFailed(Exception):
    """A bearer token was refused; `detail` says why, for the caller, and never holds the token.

    `reason` is a short stable code (`expired`, `wrong-audience`, ...) for tests and logs.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Identity:
        """The caller's identity, or `AuthenticationFailed` saying why the token is refused."""
        ...


class StaticToken(BaseModel):
    """One entry of the token file; prefer `token_sha256` so the file holds no usable secret."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(None, min_length=16)
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    subject: str = Field(min_length=1)
    groups: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict, description="e.g. department, location.")

    @model_validator(mode="after")
    def _one_secret(self) -> StaticToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of `token` or `token_sha256`")
        return self

    @property
    def digest(self) -> bytes:
        if self.token_sha256 is not None:
            return bytes.fromhex(self.token_sha256)
        assert self.token is not None
        return hashlib.sha256(self.token.encode()).digest()


class StaticTokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[StaticToken]


class StaticTokenAuthenticator:
    """Bearer tokens from a YAML file (token → subject, groups), for local use and tests."""

    def __init__(self, entries: list[StaticToken]) -> None:
        self._entries = [
            (e.digest, Identity(subject=e.subject, groups=frozenset(e.groups), attributes=e.attributes))
            for e in entries
        ]

    @classmethod
    def from_file(cls, path: Path) -> StaticTokenAuthenticator:
        return cls(StaticTokenFile.model_validate(yaml.safe_load(path.read_text())).tokens)

    def lookup(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, identity in self._entries:
            # Compare every entry in constant time, so timing does not reveal a near miss.
            if hmac.compare_digest(known, digest):
                found = identity
        return found

    async def authenticate(self, token: str) -> Identity:
        identity = self.lookup(token)
        if identity is None:
            raise AuthenticationFailed("unknown-token", "The bearer token is not a known static token.")
        return identity


def _unauthorized(detail: str, *, token_sent: bool) -> ProblemError:
    # RFC 6750: `invalid_token` tells a client to get a new token rather than retry this one.
    challenge = 'Bearer realm="lapse", error="invalid_token"' if token_sent else 'Bearer realm="lapse"'
    return ProblemError(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


_bearer = HTTPBearer(
    auto_error=False, description="OIDC access token (a JWT) from the identity provider, or a static token."
)


async def authenticate(
    authenticator: Authenticator, credentials: HTTPAuthorizationCredentials | None
) -> Identity:
    """The one identity check every endpoint goes through; a refusal is a 401 saying why."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("Send an `Authorization: Bearer <token>` header.", token_sent=False)
    if credentials.scheme.lower() != "bearer":
        raise _unauthorized("Only Bearer tokens are accepted.", token_sent=False)
    try:
        return await authenticator.authenticate(credentials.credentials)
    except AuthenticationFailed as failed:
        log.info("bearer token refused", reason=failed.reason)
        raise _unauthorized(failed.detail, token_sent=True) from None


async def _current_identity(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    return await authenticate(request.app.state.authenticator, credentials)


CurrentIdentity = Annotated[Identity, Depends(_current_identity)]
"""FastAPI parameter type: the authenticated caller (401 problem otherwise)."""
