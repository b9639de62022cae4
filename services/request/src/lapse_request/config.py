"""Settings of the request service."""

from __future__ import annotations

from pathlib import Path

from lapse_shared.settings import ServiceSettings


class RequestSettings(ServiceSettings):
    # The policy directory: its resource catalogue is checked on submit so that an unknown
    # resource or role, or a duration over the resource's cap, is refused at once with a 422.
    policy_dir: Path = Path("examples/policies")
    # Groups that may read any request (others see only their own).
    reader_groups: list[str] = ["lapse-admins", "security"]
    http_port: int = 8080
