"""Settings of the request service."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from lapse_shared.durations import Duration
from lapse_shared.messaging.auth import Producers
from lapse_shared.settings import ServiceSettings


class RequestSettings(ServiceSettings):
    # The policy directory: its resource catalogue is checked on submit so that an unknown
    # resource or role, or a duration over the resource's cap, is refused at once with a 422.
    policy_dir: Path = Path("examples/policies")
    # Groups that may read any request (others see only their own).
    reader_groups: list[str] = ["lapse-admins", "security"]
    http_port: int = 8080
    # A request still pending (undecided or awaiting reviews) this long after submission expires.
    pending_ttl: Duration = timedelta(hours=24)
    # How far ahead a start may be scheduled.
    max_schedule_ahead: Duration = timedelta(days=30)
    # The sweeper expires overdue pending requests: undecided ones (no delayed command) and any
    # the delayed command missed.
    sweep_interval_seconds: float = 30.0
    # AMQP users (RabbitMQ checks the `user_id` property) whose request.submit commands are
    # accepted; the policy then decides what each may ask for and on whose behalf.
    submit_principals: list[str] = []

    def producers(self) -> Producers:
        return Producers(broker_users=self.broker_users, submit_principals=frozenset(self.submit_principals))
