"""Who is calling: one `authenticate` behind which static tokens now, OIDC later, live."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Protocol

import yaml
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lapse_shared.http.problems import ProblemError


class Identity(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    groups: frozenset[str] = frozenset()
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Identity attributes (e.g. department) policies may test."
    )

    def in_any(self, groups: frozenset[str] | set[str] | list[str]) -> bool:
        return not self.groups.isdisjoint(groups)


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Identity | None: ...


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

    def authenticate(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, identity in self._entries:
            # Compare every entry in constant time, so timing does not reveal a near miss.
            if hmac.compare_digest(known, digest):
                found = identity
        return found


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="lapse"'},
    )


_bearer = HTTPBearer(auto_error=False, description="Bearer token (static token file, later OIDC).")


def authenticate(authenticator: Authenticator, credentials: HTTPAuthorizationCredentials | None) -> Identity:
    """The one identity check every endpoint goes through."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("Send an `Authorization: Bearer <token>` header.")
    if credentials.scheme.lower() != "bearer":
        raise _unauthorized("Only Bearer tokens are accepted.")
    identity = authenticator.authenticate(credentials.credentials)
    if identity is None:
        raise _unauthorized("The bearer token is not valid.")
    return identity


def _current_identity(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    return authenticate(request.app.state.authenticator, credentials)


CurrentIdentity = Annotated[Identity, Depends(_current_identity)]
"""FastAPI parameter type: the authenticated caller (401 problem otherwise)."""
