"""The event contract of Lapse: one module per producing service."""

from lapse_shared.events.envelope import Contract, Event, utcnow
from lapse_shared.events.grant import (
    GrantActivated,
    GrantActivatedData,
    GrantExpire,
    GrantExpireData,
    GrantFailed,
    GrantFailedData,
    GrantRevoked,
    GrantRevokedData,
    RevokeCause,
)
from lapse_shared.events.policy import Outcome, PolicyDecided, PolicyDecidedData
from lapse_shared.events.request import (
    RequestApproved,
    RequestApprovedData,
    RequestDenied,
    RequestDeniedData,
    Requester,
    RequestSubmitted,
    RequestSubmittedData,
)

EVENT_TYPES: tuple[type[Event], ...] = (
    RequestSubmitted,
    RequestApproved,
    RequestDenied,
    PolicyDecided,
    GrantActivated,
    GrantFailed,
    GrantRevoked,
    GrantExpire,
)
"""Every type in the contract; JSON Schemas are generated from this list."""

__all__ = [
    "EVENT_TYPES",
    "Contract",
    "Event",
    "GrantActivated",
    "GrantActivatedData",
    "GrantExpire",
    "GrantExpireData",
    "GrantFailed",
    "GrantFailedData",
    "GrantRevoked",
    "GrantRevokedData",
    "Outcome",
    "PolicyDecided",
    "PolicyDecidedData",
    "RequestApproved",
    "RequestApprovedData",
    "RequestDenied",
    "RequestDeniedData",
    "RequestSubmitted",
    "RequestSubmittedData",
    "Requester",
    "RevokeCause",
    "utcnow",
]
