"""Settings of the audit service."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from lapse_shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    # Groups allowed to read the audit trail.
    auditor_groups: list[str] = ["auditors", "security"]
    http_port: int = 8083

    # Ed25519 key that signs checkpoints: a PEM (PKCS#8) file, or the key itself (PEM or base64 of
    # the 32-byte seed) from a secret store. Without either, a throw-away key is generated at start
    # and a warning logged: fine for a laptop, useless as evidence (`lapse audit keygen` makes one).
    checkpoint_key_file: Path | None = None
    checkpoint_key: SecretStr | None = None
    # How often the head is signed (only when the chain grew since the last checkpoint).
    checkpoint_interval_seconds: float = 60.0

    # The SIEM stream (a RabbitMQ stream queue) and its retention: whichever limit is hit first
    # drops the oldest segments, so keep it longer than the SIEM could be down.
    siem_stream: str = "lapse.siem.ocsf"
    siem_max_age: str = "30D"
    siem_max_length_bytes: int = 20 * 1024**3
    siem_segment_bytes: int = 100 * 1024**2
    # OCSF records per stream message (JSON lines). 1 = one record per message, at a fraction of
    # the throughput; see siem_relay.py.
    siem_records_per_message: int = 100

    # Ingest batching: deliveries held unacked (bounds memory, and what is redelivered and skipped
    # after a crash), the largest batch chained in one transaction, and how long a batch may wait
    # to fill. A transaction costs about as much as a few hundred appends, so bigger batches are
    # what gets past 2,000 events/s on two cores; 20 ms is the price in latency.
    ingest_prefetch: int = 3000
    ingest_batch_max: int = 1000
    ingest_batch_wait_seconds: float = 0.02
