-- Who and what each entry is about, for the query API; derived from the entry, outside the hash.
ALTER TABLE audit.log ADD COLUMN principal text, ADD COLUMN resource text;

-- Backfill rows written before these columns existed: the append-only trigger is lifted for this
-- one statement (by the table's owner, inside the migration's transaction) and restored.
ALTER TABLE audit.log DISABLE TRIGGER log_append_only;
UPDATE audit.log SET
    principal = COALESCE(
        CASE jsonb_typeof((entry::jsonb)->'event'->'data'->'requester')
            WHEN 'object' THEN (entry::jsonb)->'event'->'data'->'requester'->>'subject'
            WHEN 'string' THEN (entry::jsonb)->'event'->'data'->>'requester'
        END,
        CASE WHEN type LIKE 'grant.%' THEN (entry::jsonb)->'event'->'data'->>'subject' END),
    resource = (entry::jsonb)->'event'->'data'->>'resource';
ALTER TABLE audit.log ENABLE TRIGGER log_append_only;

CREATE INDEX log_principal ON audit.log (principal) WHERE principal IS NOT NULL;
CREATE INDEX log_resource ON audit.log (resource) WHERE resource IS NOT NULL;
CREATE INDEX log_type ON audit.log (type, seq);
CREATE INDEX log_time ON audit.log (time);

-- Signed statements of the chain head; copies go out on the broker (`audit.checkpoint`).
CREATE TABLE audit.checkpoint (
    seq        bigint      PRIMARY KEY,
    head_hash  text        NOT NULL,
    signed_at  timestamptz NOT NULL,
    key_id     text        NOT NULL,
    public_key text        NOT NULL,
    signature  text        NOT NULL
);
CREATE TRIGGER checkpoint_append_only BEFORE UPDATE OR DELETE ON audit.checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER checkpoint_no_truncate BEFORE TRUNCATE ON audit.checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- How far the chain has been published to each SIEM stream. The log itself is the outbox: the
-- relay publishes entries after this seq with confirms, then moves the cursor (see siem_relay.py).
CREATE TABLE audit.siem_cursor (
    stream text   PRIMARY KEY,
    seq    bigint NOT NULL
);
