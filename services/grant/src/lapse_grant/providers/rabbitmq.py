"""rabbitmq-permissions: a user's permissions on a vhost, through the management HTTP API.

A role of the resource names a set of configure/write/read patterns. RabbitMQ keeps one set of
permissions per user and vhost, so a resource should offer its roles on distinct vhosts (or a
user should hold one role of it at a time).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lapse_grant.providers import Access, ProviderError, Provisioned, generic_subject_problem, parse_settings
from lapse_grant.providers.http_target import raise_for_target, unreachable

USER_MAX_BYTES = 255
"""RabbitMQ's limit on user names (a short string in AMQP 0-9-1)."""


class RolePermissions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    configure: str = "^$"
    write: str = "^$"
    read: str = "^$"


class RabbitMQTarget(BaseModel):
    """`target:` settings of a rabbitmq-permissions resource in the catalogue."""

    model_config = ConfigDict(extra="forbid")

    api_url: str = Field("http://127.0.0.1:15672", description="Management API base URL.")
    username: str = Field(description="Management user with the `administrator` tag (or policymaker).")
    password: str = Field(description="Its password; use ${VAR}.")
    vhost: str = Field(description="Vhost the permissions apply to.")
    user_format: str = Field("{subject}", description="Broker user that gets the permissions.")
    permissions: dict[str, RolePermissions] = Field(description="For each role: the patterns it grants.")


class RabbitMQPermissionsProvider:
    settings_model: ClassVar[type[BaseModel]] = RabbitMQTarget
    shared_access: ClassVar[bool] = True

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(timeout=10)

    @staticmethod
    def _settings(target: dict[str, Any]) -> RabbitMQTarget:
        return parse_settings(RabbitMQTarget, "rabbitmq-permissions", target)

    def access_problem(self, target: dict[str, Any], access: Access) -> str | None:
        """The broker user name (from `user_format`): printable and within RabbitMQ's 255 bytes."""
        user = self._settings(target).user_format.format(subject=access.subject)
        if len(user.encode()) > USER_MAX_BYTES:
            return f"the broker user name is {len(user.encode())} bytes long; at most {USER_MAX_BYTES}"
        return generic_subject_problem(user, max_chars=USER_MAX_BYTES)

    def _call(self, settings: RabbitMQTarget, access: Access) -> tuple[str, httpx.BasicAuth, RolePermissions]:
        if access.role not in settings.permissions:
            raise ProviderError(
                f"rabbitmq-permissions: no permissions defined for role '{access.role}'", transient=False
            )
        user = settings.user_format.format(subject=access.subject)
        base = settings.api_url.rstrip("/")
        url = f"{base}/api/permissions/{quote(settings.vhost, safe='')}/{quote(user, safe='')}"
        return url, httpx.BasicAuth(settings.username, settings.password), settings.permissions[access.role]

    async def grant(self, target: dict[str, Any], access: Access) -> Provisioned:
        url, auth, wanted = self._call(self._settings(target), access)
        try:
            response = await self._client.put(url, auth=auth, json=wanted.model_dump())
        except httpx.HTTPError as exc:
            raise unreachable(exc, "rabbitmq management API") from None
        raise_for_target(response, "rabbitmq: set permissions")
        return Provisioned()

    async def revoke(self, target: dict[str, Any], access: Access) -> None:
        url, auth, _ = self._call(self._settings(target), access)
        try:
            response = await self._client.delete(url, auth=auth)
        except httpx.HTTPError as exc:
            raise unreachable(exc, "rabbitmq management API") from None
        if response.status_code != 404:  # already gone: idempotent
            raise_for_target(response, "rabbitmq: clear permissions")

    async def verify(self, target: dict[str, Any], access: Access) -> bool:
        url, auth, wanted = self._call(self._settings(target), access)
        try:
            response = await self._client.get(url, auth=auth)
        except httpx.HTTPError as exc:
            raise unreachable(exc, "rabbitmq management API") from None
        if response.status_code == 404:
            return False
        raise_for_target(response, "rabbitmq: read permissions")
        held = response.json()
        return all(held.get(k) == v for k, v in wanted.model_dump().items())

    async def close(self) -> None:
        await self._client.aclose()
