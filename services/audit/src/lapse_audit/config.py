"""Settings of the audit service."""

from __future__ import annotations

from pathlib import Path

from lapse_shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    # Static bearer tokens for the query API (same file format as the request service).
    token_file: Path = Path("examples/tokens.yaml")
    # Groups allowed to read the audit trail.
    auditor_groups: list[str] = ["auditors", "security"]
    http_port: int = 8083
