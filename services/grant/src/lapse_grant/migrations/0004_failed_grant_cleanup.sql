-- A grant that failed after a grant call that may have worked in the target (verify failed or
-- timed out, a permanent error, the provisioning deadline passed) keeps `cleanup_pending` until
-- its access is removed and verified absent; the retrier drives it like a revocation
-- (revoke_attempts, next_attempt_at, last_error, and grant.revoke_failing at the threshold).
ALTER TABLE "grant".grants ADD COLUMN cleanup_pending boolean NOT NULL DEFAULT false;

-- The retrier's query for cleanups that are due.
CREATE INDEX grants_cleanup_due ON "grant".grants (next_attempt_at) WHERE cleanup_pending;
