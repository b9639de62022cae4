-- The kill switch and release cannot fail (issue 13).

-- Lateness in 64 bits: a 32-bit column overflowed for any end more than ~24.8 days away from
-- the expiry, rolling back a whole revocation batch after the targets were already revoked.
ALTER TABLE "grant".grants ALTER COLUMN lateness_ms TYPE bigint;
-- An early end (kill switch, release) is recorded as how early, not as a negative lateness.
ALTER TABLE "grant".grants ADD COLUMN ended_early_ms bigint;
UPDATE "grant".grants SET ended_early_ms = -lateness_ms, lateness_ms = 0 WHERE lateness_ms < 0;

-- `revoking`: committed before the target is touched, so that a grant on its way out is never
-- re-granted (reconciler, provisioning retry) whatever fails afterwards; the retrier finishes it.
ALTER TABLE "grant".grants DROP CONSTRAINT grants_state_check;
ALTER TABLE "grant".grants ADD CONSTRAINT grants_state_check
    CHECK (state IN ('scheduled', 'provisioning', 'active', 'revoking', 'revoked', 'failed'));

-- The retrier finishes revocations that are under way.
DROP INDEX IF EXISTS "grant".grants_next_attempt;
CREATE INDEX grants_next_attempt ON "grant".grants (next_attempt_at)
    WHERE state IN ('provisioning', 'active', 'revoking') AND next_attempt_at IS NOT NULL;

-- Kill switch orders: what a kill switch or a release covered, kept so that an approval given
-- before the order but arriving after it is refused, never provisioned.
CREATE TABLE "grant".revocation_orders (
    id          uuid PRIMARY KEY,
    -- What the order covered: any of these may be NULL, as in the command.
    subject     text,
    resource    text,
    request_id  uuid,
    grant_id    uuid,
    cause       text        NOT NULL,
    actor       text        NOT NULL,
    reason      text        NOT NULL,
    -- Approvals given at or before this time are covered; later ones are new decisions.
    issued_at   timestamptz NOT NULL
);
CREATE INDEX revocation_orders_subject ON "grant".revocation_orders (subject) WHERE subject IS NOT NULL;
CREATE INDEX revocation_orders_resource ON "grant".revocation_orders (resource) WHERE resource IS NOT NULL;
CREATE INDEX revocation_orders_request ON "grant".revocation_orders (request_id) WHERE request_id IS NOT NULL;
