-- Approval workflow: a grant may wait for its scheduled start, and its window counts from the
-- approval (or the scheduled start), not from when provisioning happened to succeed.
ALTER TABLE "grant".grants DROP CONSTRAINT grants_state_check;
ALTER TABLE "grant".grants ADD CONSTRAINT grants_state_check
    CHECK (state IN ('scheduled', 'provisioning', 'active', 'revoked', 'failed'));

ALTER TABLE "grant".grants
    ADD COLUMN approved_at timestamptz,
    -- The scheduled start; NULL when provisioned at approval.
    ADD COLUMN start_at timestamptz,
    -- The last approved extension, if any (the event grant.extended carries each one).
    ADD COLUMN extended_at timestamptz,
    ADD COLUMN extension_request_id uuid;

-- The retrier's safety net: scheduled grants whose grant.start message was lost.
CREATE INDEX grants_scheduled_start ON "grant".grants (start_at) WHERE state = 'scheduled';
