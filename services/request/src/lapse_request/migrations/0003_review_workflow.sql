-- Issue 4: reviews, pending expiry, cancel, scheduled start, extensions, service principals.
ALTER TABLE request.requests DROP CONSTRAINT requests_state_check;
ALTER TABLE request.requests ADD CONSTRAINT requests_state_check CHECK (state IN
    ('pending', 'approved', 'denied', 'active', 'ended', 'failed', 'cancelled', 'expired'));

ALTER TABLE request.requests
    ADD COLUMN kind             text        NOT NULL DEFAULT 'user',
    ADD COLUMN submitted_by     text,
    ADD COLUMN start_at         timestamptz,
    ADD COLUMN extends_grant_id uuid,
    ADD COLUMN pending_until    timestamptz,
    ADD COLUMN approved_at      timestamptz,
    -- Reviews in the order they came: [{reviewer, verdict, comment, stage, reviewed_at}].
    ADD COLUMN reviews          jsonb       NOT NULL DEFAULT '[]',
    -- Derived on every save, for listing: who reviewed, and which groups may review now ('*': anyone).
    ADD COLUMN reviewers        text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN review_groups    text[]      NOT NULL DEFAULT '{}';

UPDATE request.requests SET pending_until = created_at + interval '24 hours' WHERE state = 'pending';

-- Listing walks (created_at, id) backwards with a keyset cursor.
CREATE INDEX requests_created ON request.requests (created_at DESC, id DESC);
CREATE INDEX requests_pending_until ON request.requests (pending_until) WHERE state = 'pending';
-- Non-empty only while a review (pending, or a break-glass review after the fact) is open.
CREATE INDEX requests_review_groups ON request.requests USING gin (review_groups) WHERE review_groups <> '{}';
CREATE INDEX requests_grant ON request.requests (grant_id) WHERE grant_id IS NOT NULL;
