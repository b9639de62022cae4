"""Grant providers: plugins that turn a grant into real access in a target, and back.

Each is registered under the `lapse.providers` entry point group with its kind as the name.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Protocol


class ProviderError(Exception):
    """A target refused or failed; `transient` says whether trying again may help.

    The message must never carry secrets: it reaches events and the audit trail.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Provider(Protocol):
    """Idempotent operations on one kind of target; `target` is the resource's settings."""

    async def grant(self, target: dict[str, Any], subject: str, role: str) -> None: ...

    async def revoke(self, target: dict[str, Any], subject: str, role: str) -> None: ...

    async def verify(self, target: dict[str, Any], subject: str, role: str) -> bool:
        """True when the access is present in the target."""
        ...

    async def close(self) -> None: ...


def load_providers() -> dict[str, Provider]:
    """Instantiate every installed provider plugin, by kind."""
    return {ep.name: ep.load()() for ep in entry_points(group="lapse.providers")}
