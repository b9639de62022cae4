"""Credentials of ephemeral accesses: encrypted at rest until the requester fetches them once."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet


class CredentialVault:
    """Fernet (AES-128-CBC + HMAC-SHA256) with a key from settings; the database never sees
    clear credentials, and a fetched credential is erased."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, credentials: dict[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(credentials).encode())

    def open(self, sealed: bytes) -> dict[str, str]:
        opened: dict[str, str] = json.loads(self._fernet.decrypt(sealed))
        return opened
