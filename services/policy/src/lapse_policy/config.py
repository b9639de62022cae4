"""Settings of the policy service."""

from __future__ import annotations

from pathlib import Path

from lapse_shared.settings import ServiceSettings


class PolicySettings(ServiceSettings):
    # Directory of YAML policy files and the resource catalogue (versioned by its users in git).
    policy_dir: Path = Path("examples/policies")
    # Groups whose members may dry-run a request for any requester (others only for themselves):
    # a dry run reveals what another person could get, which is policy insight, not access.
    admin_groups: list[str] = ["lapse-admins", "security"]
    http_port: int = 8081
