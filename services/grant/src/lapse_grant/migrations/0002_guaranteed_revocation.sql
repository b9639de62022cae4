-- Provisioning and revocation are retried until they succeed, so their attempts are state.
ALTER TABLE "grant".grants DROP CONSTRAINT grants_state_check;
ALTER TABLE "grant".grants ADD CONSTRAINT grants_state_check
    CHECK (state IN ('provisioning', 'active', 'revoked', 'failed'));

ALTER TABLE "grant".grants
    -- Provisioning gives up (the request fails) after this time; transient errors retry until then.
    ADD COLUMN provision_deadline timestamptz,
    ADD COLUMN provision_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN revoke_attempts integer NOT NULL DEFAULT 0,
    -- When the retrier tries again (provisioning, or a revocation that failed).
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error text,
    ADD COLUMN access_retained boolean NOT NULL DEFAULT false,
    ADD COLUMN revoked_by text,
    ADD COLUMN revoke_reason text,
    -- Credentials of an ephemeral login, encrypted (Fernet) until the requester fetches them once.
    ADD COLUMN credentials_ciphertext bytea,
    ADD COLUMN credentials_delivered_at timestamptz;

-- The retrier's queries.
CREATE INDEX grants_next_attempt ON "grant".grants (next_attempt_at)
    WHERE state IN ('provisioning', 'active') AND next_attempt_at IS NOT NULL;
-- Overlap checks, the kill switch and drift reconciliation look grants up by their access.
CREATE INDEX grants_access ON "grant".grants (resource, subject, role, state);
CREATE INDEX grants_subject_active ON "grant".grants (subject) WHERE state = 'active';

-- The target settings the grant was provisioned with (unexpanded: `${VAR}` references, no
-- secrets), so it can be revoked even after its resource changed or left the catalogue.
ALTER TABLE "grant".grants ADD COLUMN target jsonb NOT NULL DEFAULT '{}';
