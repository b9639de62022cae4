"""Settings of the grant service."""

from __future__ import annotations

from pathlib import Path

from lapse_shared.settings import ServiceSettings


class GrantSettings(ServiceSettings):
    # The policy directory: the resource catalogue says which provider and target serve a
    # resource. Target secrets are `${VAR}` references resolved from this service's environment.
    policy_dir: Path = Path("examples/policies")
    # How often the sweeper looks for active grants past their expiry (the safety net).
    sweep_interval_seconds: float = 5.0
    # How far past expires_at a grant must be before the sweeper takes it: leaves the delayed
    # message its chance, so the sweeper only acts when that message was lost or failed.
    sweep_grace_seconds: float = 5.0
    # Attempts at provisioning on a transient target error before the grant is failed.
    provision_attempts: int = 3
    # An expiry message arriving this early (or less) is held until due; earlier is rescheduled.
    expire_hold_seconds: float = 2.0
    http_port: int = 8082
