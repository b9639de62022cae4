"""Settings of the policy service."""

from __future__ import annotations

from pathlib import Path

from lapse_shared.settings import ServiceSettings


class PolicySettings(ServiceSettings):
    # Directory of YAML policy files and the resource catalogue (versioned by its users in git).
    policy_dir: Path = Path("examples/policies")
    http_port: int = 8081
