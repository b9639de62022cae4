-- One row per (event, webhook): what to tell whom, and how far the telling got.
-- The webhook's URL is not stored: it is a secret, resolved from the configuration at send time.
CREATE TABLE notify.delivery (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    request_id      uuid        NOT NULL,
    webhook         text        NOT NULL,
    -- The CloudEvent as received; rendered for the webhook's format when sent, so a
    -- configuration change (format, public_url) applies to notices still waiting.
    event           jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Due time of the next attempt; while an attempt is under way, the end of its lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (event_id, webhook)
);
CREATE INDEX delivery_due ON notify.delivery (webhook, next_attempt_at) WHERE state = 'pending';
-- Decisions go to a group-filtered webhook only where the review was asked: looked up by request.
CREATE INDEX delivery_request ON notify.delivery (request_id, webhook);
CREATE INDEX delivery_finished ON notify.delivery (finished_at) WHERE state <> 'pending';
