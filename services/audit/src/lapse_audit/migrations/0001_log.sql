-- The audit log: append-only, each entry chained to the one before by its hash.
CREATE TABLE audit.log (
    seq            bigint PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    type           text        NOT NULL,
    subject        text        NOT NULL,
    correlation_id uuid        NOT NULL,
    time           timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    -- Canonical JSON of the whole entry: the hashed bytes, kept verbatim for verification.
    entry          text        NOT NULL,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL
);
CREATE INDEX log_subject ON audit.log (subject, seq);
CREATE INDEX log_correlation ON audit.log (correlation_id, seq);

-- The database itself refuses edits: only a superuser disabling the trigger gets past it, and
-- then the chain shows it.
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER log_append_only BEFORE UPDATE OR DELETE ON audit.log
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER log_no_truncate BEFORE TRUNCATE ON audit.log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
