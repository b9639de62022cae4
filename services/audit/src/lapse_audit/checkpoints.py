"""Signed checkpoints of the chain head (Ed25519): the statement, signing it, checking it. Pure.

A checkpoint says "entry `seq` of the Lapse audit chain has hash `head_hash`", signed with a key
the database never holds. Copies kept outside Lapse (the broker's `audit.checkpoint` events, a
SIEM) then prove any later rewrite of the chain, even one that recomputes every hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

STATEMENT_VERSION = "lapse-audit-checkpoint/v1"


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    signed_at: datetime
    key_id: str
    public_key: str
    signature: str

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "signed_at": self.signed_at.isoformat(),
            "key_id": self.key_id,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Checkpoint:
        signed_at = data["signed_at"]
        return cls(
            seq=int(str(data["seq"])),
            head_hash=str(data["head_hash"]),
            signed_at=signed_at
            if isinstance(signed_at, datetime)
            else datetime.fromisoformat(str(signed_at)),
            key_id=str(data["key_id"]),
            public_key=str(data["public_key"]),
            signature=str(data["signature"]),
        )


def statement(seq: int, head_hash: str, signed_at: datetime) -> bytes:
    """The exact bytes signed: versioned, one field a line, so no two checkpoints share a form."""
    return f"{STATEMENT_VERSION}\n{seq}\n{head_hash}\n{signed_at.isoformat()}".encode()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public_key(public_key)).hexdigest()[:16]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public_key(public_key)).decode()


def load_private_key(text: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 key, or the base64 of its 32-byte raw seed.

    Errors never echo the input: it is the secret.
    """
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("the PEM key is not an Ed25519 key")
            return key
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(
            "the checkpoint signing key is not an Ed25519 PEM key nor a base64 32-byte seed"
        ) from None  # the original message could quote the secret


def load_public_key(text: str) -> Ed25519PublicKey:
    """A PEM (SubjectPublicKeyInfo) Ed25519 public key, or base64 of the 32 raw bytes."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not an Ed25519 public key (PEM, or base64 of 32 raw bytes)") from exc


def private_key_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class CheckpointSigner:
    """Holds the private key; only ever hands out signatures and the public half."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:  # never let a log line or traceback print the key
        return f"CheckpointSigner(key_id={self.key_id})"

    def sign(self, seq: int, head_hash: str, signed_at: datetime) -> Checkpoint:
        signature = self._key.sign(statement(seq, head_hash, signed_at))
        return Checkpoint(
            seq=seq,
            head_hash=head_hash,
            signed_at=signed_at,
            key_id=self.key_id,
            public_key=public_key_b64(self.public_key),
            signature=base64.b64encode(signature).decode(),
        )


def check_signature(checkpoint: Checkpoint, trusted: dict[str, Ed25519PublicKey]) -> str | None:
    """None when a trusted key signed exactly this checkpoint; otherwise what is wrong."""
    key = trusted.get(checkpoint.key_id)
    if key is None:
        return f"signed by key {checkpoint.key_id}, which is not a trusted key"
    try:
        key.verify(
            base64.b64decode(checkpoint.signature),
            statement(checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return "the signature does not match the checkpoint (altered, or signed by another key)"
    return None


def trusted_keys(keys: list[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in keys}
