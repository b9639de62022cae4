-- "grant" is an SQL keyword, hence the quotes.
CREATE TABLE "grant".grants (
    id               uuid PRIMARY KEY,
    request_id       uuid        NOT NULL UNIQUE,
    subject          text        NOT NULL,
    resource         text        NOT NULL,
    role             text        NOT NULL,
    provider         text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('active', 'revoked', 'failed')),
    duration_seconds integer     NOT NULL,
    granted_at       timestamptz,
    expires_at       timestamptz,
    revoked_at       timestamptz,
    lateness_ms      integer,
    revoke_cause     text,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The sweeper's query: active grants by expiry.
CREATE INDEX grants_active_expiry ON "grant".grants (expires_at) WHERE state = 'active';
