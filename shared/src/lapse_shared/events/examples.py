"""One example of every event and command, for the generated contract documents.

The examples tell one story, so a reader can follow ids from message to message:

1. alice (a developer) asks over HTTP for `orders_readwrite` on `orders-db` for 30 minutes
   (`request.submitted`); the policy wants one DBA (`policy.decided`, `request.awaiting_review`);
   bob approves (`request.reviewed`, `request.approved`); the grant service provisions it
   (`grant.activated`) and schedules its expiry (`grant.expire`).
2. alice's extension request lengthens the grant (`grant.extended`); she releases it early through
   the request service (`grant.revoke`, cause `released`), which revokes it (`grant.revoked`); later
   the reconciler finds the role granted again by hand and removes it (`grant.drift_detected`).
3. Beside it: deploy-bot asks on alice's behalf (`request.submit`) and another of its commands is
   malformed (`request.rejected`); carol, a contractor, is denied write access (`request.denied`);
   dave cancels (`request.cancelled`); erin's request lapses (`request.expire`, `request.expired`);
   a scheduled grant starts (`grant.start`), one fails to provision (`grant.failed`), one keeps
   failing to be revoked (`grant.revoke_failing`); the audit service signs its chain's head
   (`audit.checkpoint`; the key and signature are illustrative, they do not verify).

Ids and times are fixed, so the documents generated from these are the same on every run. The
models are constructed here (not written as dicts) so an example cannot drift from its schema.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from lapse_shared.events.audit import AuditCheckpoint, AuditCheckpointData
from lapse_shared.events.envelope import Event
from lapse_shared.events.grant import (
    DriftKind,
    GrantActivated,
    GrantActivatedData,
    GrantDriftDetected,
    GrantDriftDetectedData,
    GrantExpire,
    GrantExpireData,
    GrantExtended,
    GrantExtendedData,
    GrantFailed,
    GrantFailedData,
    GrantRevoke,
    GrantRevoked,
    GrantRevokeData,
    GrantRevokedData,
    GrantRevokeFailing,
    GrantRevokeFailingData,
    GrantStart,
    GrantStartData,
    RevokeCause,
)
from lapse_shared.events.policy import (
    ApprovalRequirement,
    ApprovalStage,
    Outcome,
    PolicyDecided,
    PolicyDecidedData,
    RuleMatch,
)
from lapse_shared.events.request import (
    RequestApproved,
    RequestApprovedData,
    RequestAwaitingReview,
    RequestAwaitingReviewData,
    RequestCancelled,
    RequestCancelledData,
    RequestDenied,
    RequestDeniedData,
    Requester,
    RequestExpire,
    RequestExpired,
    RequestExpireData,
    RequestExpiredData,
    RequestRejected,
    RequestRejectedData,
    RequestReviewed,
    RequestReviewedData,
    RequestSubmit,
    RequestSubmitData,
    RequestSubmitted,
    RequestSubmittedData,
    ReviewVerdict,
)
from lapse_shared.events.security import SecurityMessageRejected, SecurityMessageRejectedData


class Example(NamedTuple):
    """An example message: `name` and `summary` as an AsyncAPI message example names them."""

    name: str
    summary: str
    event: Event


# Requests (the id is also `subject` and `correlation_id` of every event about the request).
ALICE_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a001")
ALICE_EXTENSION = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a002")
BOT_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a003")
CAROL_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a004")
DAVE_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a005")
ERIN_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a006")
SCHEDULED_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a007")
FAILED_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a008")
STUCK_REQUEST = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a009")
REJECTED_COMMAND = uuid.UUID("3f0c8a52-6d1e-4b7a-9c25-0e8f41d7a00a")
# Grants.
ALICE_GRANT = uuid.UUID("9b2d47e1-0c3a-4f86-b1d5-7a6e2c9f0b01")
SCHEDULED_GRANT = uuid.UUID("9b2d47e1-0c3a-4f86-b1d5-7a6e2c9f0b02")
FAILED_GRANT = uuid.UUID("9b2d47e1-0c3a-4f86-b1d5-7a6e2c9f0b03")
STUCK_GRANT = uuid.UUID("9b2d47e1-0c3a-4f86-b1d5-7a6e2c9f0b04")
# The audit chain's id (`lapse_audit.handlers.CHAIN_ID`): checkpoints are about the chain.
AUDIT_CHAIN = uuid.UUID("5a0d1e7c-9b1f-4c3e-8d6a-2f4b7c9e1a30")

RESOURCE = "orders-db"
WRITE, READ = "orders_readwrite", "orders_readonly"
POLICY_VERSION = "sha256:a264a5f81fef6a6a135f1d5d59c609eb8aa7921f7bab61411fd9296f70cdb275"
WRITE_RULE = "developers-write-orders-reviewed"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
"""When alice submits; every other time is counted from here."""


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _event_id(n: int) -> uuid.UUID:
    return uuid.UUID(f"c4e1a7d0-2b5f-4e93-8a61-d05b3e7f{n:04x}")


# Event ids that other examples name as their cause.
SUBMITTED_ID, DECIDED_ID, REVIEWED_ID, APPROVED_ID = _event_id(1), _event_id(2), _event_id(4), _event_id(5)
ACTIVATED_ID, REVOKE_ID = _event_id(6), _event_id(9)

_WRITE_REVIEW = ApprovalRequirement(
    stages=[ApprovalStage(name="DBA", approvals=1, groups=["dba"])],
    excluded_approvers=["alice"],
)


def _request_examples() -> list[Example]:
    return [
        Example(
            "alice-asks-for-write-access",
            "alice asks over HTTP for 30 minutes of write access to the orders database.",
            RequestSubmitted(
                id=SUBMITTED_ID,
                source="lapse/request",
                time=T0,
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                data=RequestSubmittedData(
                    request_id=ALICE_REQUEST,
                    requester=Requester(
                        subject="alice", groups=["developers"], attributes={"department": "engineering"}
                    ),
                    resource=RESOURCE,
                    role=WRITE,
                    duration_seconds=1800,
                    reason="CHG-77: backfill the order totals after the tax fix",
                    submitted_at=T0,
                    ticket="CHG-77",
                ),
            ),
        ),
        Example(
            "dba-review-needed",
            "The DBA stage starts: one approval from `dba`, alice excluded; it lapses after a day.",
            RequestAwaitingReview(
                id=_event_id(3),
                source="lapse/request",
                time=_at(0.01),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                causation_id=DECIDED_ID,
                data=RequestAwaitingReviewData(
                    request_id=ALICE_REQUEST,
                    requester="alice",
                    resource=RESOURCE,
                    role=WRITE,
                    duration_seconds=1800,
                    reason="CHG-77: backfill the order totals after the tax fix",
                    ticket="CHG-77",
                    stage=0,
                    stage_name="DBA",
                    approvals_needed=1,
                    approver_groups=["dba"],
                    pending_until=_at(24 * 60),
                ),
            ),
        ),
        Example(
            "bob-approves",
            "bob, a DBA, approves alice's request; the DBA stage is complete.",
            RequestReviewed(
                id=REVIEWED_ID,
                source="lapse/request",
                time=_at(5),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                data=RequestReviewedData(
                    request_id=ALICE_REQUEST,
                    requester="alice",
                    reviewer="bob",
                    verdict=ReviewVerdict.APPROVE,
                    comment="Checked the backfill script; go ahead.",
                    stage=0,
                    stage_name="DBA",
                    approvals_in_stage=1,
                    approvals_needed=1,
                    reviewed_at=_at(5),
                ),
            ),
        ),
        Example(
            "alice-approved-after-review",
            "Every stage is complete: alice may have write access for 30 minutes from now.",
            RequestApproved(
                id=APPROVED_ID,
                source="lapse/request",
                time=_at(5),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                causation_id=REVIEWED_ID,
                data=RequestApprovedData(
                    request_id=ALICE_REQUEST,
                    requester="alice",
                    resource=RESOURCE,
                    role=WRITE,
                    duration_seconds=1800,
                    approved_at=_at(5),
                    rule=WRITE_RULE,
                    policy_version=POLICY_VERSION,
                    approvers=["bob"],
                ),
            ),
        ),
        Example(
            "carol-denied-write-access",
            "carol, a contractor, asks for write access; an explicit deny rule wins.",
            RequestDenied(
                id=_event_id(20),
                source="lapse/request",
                time=_at(12),
                subject=str(CAROL_REQUEST),
                correlation_id=CAROL_REQUEST,
                causation_id=_event_id(21),
                data=RequestDeniedData(
                    request_id=CAROL_REQUEST,
                    requester="carol",
                    resource=RESOURCE,
                    role=WRITE,
                    reasons=["Contractors get read-only access only; ask your team lead."],
                    rule="contractors-never-write",
                    policy_version=POLICY_VERSION,
                ),
            ),
        ),
        Example(
            "dave-cancels",
            "dave withdraws his pending request before anyone reviewed it.",
            RequestCancelled(
                id=_event_id(22),
                source="lapse/request",
                time=_at(20),
                subject=str(DAVE_REQUEST),
                correlation_id=DAVE_REQUEST,
                data=RequestCancelledData(
                    request_id=DAVE_REQUEST,
                    requester="dave",
                    resource=RESOURCE,
                    role=WRITE,
                    cancelled_by="dave",
                    cancelled_at=_at(20),
                ),
            ),
        ),
        Example(
            "erin-request-due-to-lapse",
            "The delayed command, due when erin's request would wait no longer for a review.",
            RequestExpire(
                id=_event_id(23),
                source="lapse/request",
                time=_at(-60),
                subject=str(ERIN_REQUEST),
                correlation_id=ERIN_REQUEST,
                data=RequestExpireData(request_id=ERIN_REQUEST, pending_until=_at(23 * 60)),
            ),
        ),
        Example(
            "erin-request-lapsed",
            "Nobody reviewed erin's request within a day: it lapsed.",
            RequestExpired(
                id=_event_id(24),
                source="lapse/request",
                time=_at(23 * 60),
                subject=str(ERIN_REQUEST),
                correlation_id=ERIN_REQUEST,
                causation_id=_event_id(23),
                data=RequestExpiredData(
                    request_id=ERIN_REQUEST,
                    requester="erin",
                    resource=RESOURCE,
                    role=WRITE,
                    pending_since=_at(-60),
                    expired_at=_at(23 * 60),
                ),
            ),
        ),
    ]


def _command_examples() -> list[Example]:
    return [
        Example(
            "deploy-bot-asks-for-alice",
            "The deploy pipeline (AMQP user `deploy-bot`) asks for read access on alice's behalf.",
            RequestSubmit(
                id=BOT_REQUEST,
                source="deploy-bot",
                time=_at(10),
                subject=str(BOT_REQUEST),
                correlation_id=BOT_REQUEST,
                data=RequestSubmitData(
                    resource=RESOURCE,
                    role=READ,
                    duration_seconds=900,
                    reason="Release 4.2: verify the orders migration",
                    on_behalf_of="alice",
                    groups=["developers"],
                    ticket="CHG-81",
                ),
            ),
        ),
        Example(
            "deploy-bot-command-rejected",
            "A `request.submit` from deploy-bot asked for zero seconds; it is refused and dead-lettered.",
            RequestRejected(
                id=_event_id(25),
                source="lapse/request",
                time=_at(11),
                subject=str(REJECTED_COMMAND),
                correlation_id=REJECTED_COMMAND,
                data=RequestRejectedData(
                    command_id=REJECTED_COMMAND,
                    principal="deploy-bot",
                    reason="the message is not a valid request.submit",
                    errors=["data.duration_seconds: Input should be greater than 0"],
                    rejected_at=_at(11),
                ),
            ),
        ),
        Example(
            "alice-releases-her-grant",
            "alice is done early: the request service asks the grant service to end her grant.",
            GrantRevoke(
                id=REVOKE_ID,
                source="lapse/request",
                time=_at(50),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                data=GrantRevokeData(
                    grant_id=ALICE_GRANT,
                    request_id=ALICE_REQUEST,
                    reason="backfill finished",
                    actor="alice",
                    cause=RevokeCause.RELEASED,
                ),
            ),
        ),
    ]


def _policy_examples() -> list[Example]:
    return [
        Example(
            "write-access-needs-a-dba",
            "The policy wants one DBA who is not alice to approve; 30 minutes is within the 1h cap.",
            PolicyDecided(
                id=DECIDED_ID,
                source="lapse/policy",
                time=_at(0.01),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                causation_id=SUBMITTED_ID,
                data=PolicyDecidedData(
                    request_id=ALICE_REQUEST,
                    outcome=Outcome.REVIEW,
                    rule=WRITE_RULE,
                    reasons=[
                        f"matched rule '{WRITE_RULE}'",
                        "needs 1 approval(s)",
                        "'alice' may not approve their own request",
                    ],
                    effective_duration_seconds=1800,
                    approvals_required=1,
                    approver_groups=["dba"],
                    policy_version=POLICY_VERSION,
                    approval=_WRITE_REVIEW,
                    matched_rules=[
                        RuleMatch(
                            rule=WRITE_RULE,
                            file="rules.yaml",
                            outcome=Outcome.REVIEW,
                            specificity=[2, 2, 1, 0],
                            why=[
                                "who: group developers",
                                "resource 'orders-db' matches 'orders-db'",
                                "role 'orders_readwrite' matches 'orders_readwrite'",
                            ],
                            max_duration_seconds=3600,
                        )
                    ],
                ),
            ),
        ),
    ]


def _grant_examples() -> list[Example]:
    granted_at = _at(5) + timedelta(seconds=2)
    expires_at = granted_at + timedelta(minutes=30)
    extended_to = _at(60)
    return [
        Example(
            "alice-has-write-access",
            "alice's role is granted in orders-db and verified present, until 09:35:02 UTC.",
            GrantActivated(
                id=ACTIVATED_ID,
                source="lapse/grant",
                time=granted_at,
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                causation_id=APPROVED_ID,
                data=GrantActivatedData(
                    grant_id=ALICE_GRANT,
                    request_id=ALICE_REQUEST,
                    subject="alice",
                    resource=RESOURCE,
                    role=WRITE,
                    granted_at=granted_at,
                    expires_at=expires_at,
                ),
            ),
        ),
        Example(
            "alice-grant-due-to-expire",
            "The delayed command, due when alice's grant ends: revoke it if still active.",
            GrantExpire(
                id=_event_id(7),
                source="lapse/grant",
                time=granted_at,
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                causation_id=ACTIVATED_ID,
                data=GrantExpireData(grant_id=ALICE_GRANT, expires_at=expires_at),
            ),
        ),
        Example(
            "alice-grant-extended",
            "An approved extension request lengthens alice's grant until 10:00 UTC.",
            GrantExtended(
                id=_event_id(8),
                source="lapse/grant",
                time=_at(30),
                subject=str(ALICE_EXTENSION),
                correlation_id=ALICE_EXTENSION,
                data=GrantExtendedData(
                    grant_id=ALICE_GRANT,
                    request_id=ALICE_REQUEST,
                    extension_request_id=ALICE_EXTENSION,
                    subject="alice",
                    resource=RESOURCE,
                    role=WRITE,
                    previous_expires_at=expires_at,
                    expires_at=extended_to,
                    extended_at=_at(30),
                ),
            ),
        ),
        Example(
            "alice-grant-released",
            "alice's role is removed from orders-db ten minutes before its end, as she asked.",
            GrantRevoked(
                id=_event_id(10),
                source="lapse/grant",
                time=_at(50) + timedelta(seconds=1),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                causation_id=REVOKE_ID,
                data=GrantRevokedData(
                    grant_id=ALICE_GRANT,
                    request_id=ALICE_REQUEST,
                    subject="alice",
                    resource=RESOURCE,
                    role=WRITE,
                    expires_at=extended_to,
                    revoked_at=_at(50) + timedelta(seconds=1),
                    lateness_ms=0,
                    ended_early_ms=599_000,
                    cause=RevokeCause.RELEASED,
                    revoked_by="alice",
                    revoke_reason="backfill finished",
                ),
            ),
        ),
        Example(
            "alice-role-granted-again-by-hand",
            "The reconciler finds alice's ended grant present again in orders-db and removes it.",
            GrantDriftDetected(
                id=_event_id(11),
                source="lapse/grant",
                time=_at(75),
                subject=str(ALICE_REQUEST),
                correlation_id=ALICE_REQUEST,
                data=GrantDriftDetectedData(
                    grant_id=ALICE_GRANT,
                    request_id=ALICE_REQUEST,
                    subject="alice",
                    resource=RESOURCE,
                    role=WRITE,
                    kind=DriftKind.UNEXPECTED,
                    repaired=True,
                ),
            ),
        ),
        Example(
            "scheduled-grant-starts",
            "The delayed command, due at the start of a grant scheduled for Saturday's maintenance.",
            GrantStart(
                id=_event_id(30),
                source="lapse/grant",
                time=_at(15),
                subject=str(SCHEDULED_REQUEST),
                correlation_id=SCHEDULED_REQUEST,
                data=GrantStartData(
                    grant_id=SCHEDULED_GRANT, start_at=datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
                ),
            ),
        ),
        Example(
            "provisioning-failed",
            "The orders database refused the provisioner's login; the request ends as failed.",
            GrantFailed(
                id=_event_id(31),
                source="lapse/grant",
                time=_at(40),
                subject=str(FAILED_REQUEST),
                correlation_id=FAILED_REQUEST,
                data=GrantFailedData(
                    grant_id=FAILED_GRANT,
                    request_id=FAILED_REQUEST,
                    resource=RESOURCE,
                    role=READ,
                    reason="orders-db: password authentication failed for user lapse_provisioner",
                ),
            ),
        ),
        Example(
            "revocation-keeps-failing",
            "frank's grant ended but orders-db is unreachable; Lapse alerts and keeps retrying.",
            GrantRevokeFailing(
                id=_event_id(32),
                source="lapse/grant",
                time=_at(95),
                subject=str(STUCK_REQUEST),
                correlation_id=STUCK_REQUEST,
                data=GrantRevokeFailingData(
                    grant_id=STUCK_GRANT,
                    request_id=STUCK_REQUEST,
                    subject="frank",
                    resource=RESOURCE,
                    role=READ,
                    expires_at=_at(90),
                    attempts=5,
                    error="orders-db: connection refused (db.internal:5432)",
                ),
            ),
        ),
    ]


def _audit_examples() -> list[Example]:
    signed_at = _at(120)
    return [
        Example(
            "audit-head-signed",
            "The audit service signs the head of its chain, entry 1042.",
            AuditCheckpoint(
                id=_event_id(40),
                source="lapse/audit",
                time=signed_at,
                subject=str(AUDIT_CHAIN),
                correlation_id=AUDIT_CHAIN,
                data=AuditCheckpointData(
                    seq=1042,
                    head_hash="5e3b9f0a7c21d4e68b9a0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a",
                    signed_at=signed_at,
                    key_id="a41f09c3d27e6b58",
                    public_key="Hq3xkA0w4l3m0v1cJp6Y8bqRkz2S7nFvTgLxWcE9dU4=",
                    signature=(
                        "y6Jb3V0qg1Wc9sL2mF8tR4kZp7nX5hD0aE3uQ6iO9vB2cG1jK8lM4nP7rS0tU3wX"
                        "5yZ6aB9cD2eF5gH8iJ1kL4mN7oP0qR3sT6uV9wX2yZ5aB8cDw=="
                    ),
                ),
            ),
        ),
    ]


def _security_examples() -> list[Example]:
    return [
        Example(
            "forged-approval-refused",
            "The grant service refuses request.approved events published with the notifier's broker"
            " credentials; 41 more were counted since the last entry.",
            SecurityMessageRejected(
                id=_event_id(50),
                source="lapse/grant",
                time=_at(130),
                subject="security",
                correlation_id=uuid.UUID("00000000-0000-4000-8000-00000000c0de"),
                data=SecurityMessageRejectedData(
                    service="grant",
                    queue="lapse.grant.approved",
                    message_type="request.approved",
                    principal="lapse-notifier",
                    reason="principal 'lapse-notifier' may not publish request.approved",
                    message_id="3f8c2a10-5b7e-4d0a-9c61-2e4f8a7b9d01",
                    suppressed=41,
                ),
            ),
        ),
    ]


def event_examples() -> dict[str, Example]:
    """One example per event and command type, keyed by type (e.g. `grant.activated`)."""
    every = (
        _request_examples()
        + _command_examples()
        + _policy_examples()
        + _grant_examples()
        + _audit_examples()
        + _security_examples()
    )
    return {example.event.TYPE: example for example in every}
