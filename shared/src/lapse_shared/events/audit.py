"""Events published by the audit service."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from lapse_shared.events.envelope import Contract, Event


class AuditCheckpointData(Contract):
    seq: int = Field(ge=0, description="Last chain entry covered; the head at signing time.")
    head_hash: str = Field(description="Hash of entry `seq` (64 hex digits; zeros for an empty chain).")
    signed_at: datetime = Field(description="When the head was signed (part of the signed statement).")
    key_id: str = Field(description="First 16 hex digits of sha256 over the raw public key.")
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    signature: str = Field(description="Ed25519 signature of the checkpoint statement, base64.")


class AuditCheckpoint(Event):
    """A signed statement of the audit chain's head; keep copies outside Lapse to prove later edits.

    `subject` and `correlation_id` are the chain's id, not a request's. The audit service does not
    chain its own checkpoints (each would be a new head to sign).
    """

    TYPE: ClassVar[str] = "audit.checkpoint"
    type: Literal["audit.checkpoint"] = "audit.checkpoint"
    data: AuditCheckpointData
