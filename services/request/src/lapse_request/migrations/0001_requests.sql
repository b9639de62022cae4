CREATE TABLE request.requests (
    id                uuid PRIMARY KEY,
    requester         text        NOT NULL,
    groups            text[]      NOT NULL DEFAULT '{}',
    resource          text        NOT NULL,
    role              text        NOT NULL,
    duration_seconds  integer     NOT NULL CHECK (duration_seconds > 0),
    reason            text        NOT NULL,
    state             text        NOT NULL
        CHECK (state IN ('pending', 'approved', 'denied', 'active', 'ended', 'failed')),
    -- The policy's decision as received (outcome, rule, reasons, policy_version, ...).
    decision          jsonb,
    grant_id          uuid,
    granted_at        timestamptz,
    expires_at        timestamptz,
    revoked_at        timestamptz,
    lateness_ms       integer,
    failure_reason    text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX requests_requester ON request.requests (requester, created_at DESC);
CREATE INDEX requests_state ON request.requests (state) WHERE state IN ('pending', 'approved', 'active');
