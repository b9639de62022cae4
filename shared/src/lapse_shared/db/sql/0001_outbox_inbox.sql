-- Outbox and inbox of one service, created in that service's own schema ({schema}).
CREATE TABLE IF NOT EXISTS "{schema}".outbox (
    id             bigserial PRIMARY KEY,
    message_id     uuid        NOT NULL UNIQUE,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    message_type   text        NOT NULL,
    correlation_id text,
    body           text        NOT NULL,
    -- Set for delayed commands: the relay routes them through the delay cascade at publish time.
    due_at         timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON "{schema}".outbox (id) WHERE sent_at IS NULL;

CREATE OR REPLACE FUNCTION "{schema}".outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lapse_outbox_{schema}', '');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS outbox_notify ON "{schema}".outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON "{schema}".outbox
    FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".outbox_notify();

-- Every consumed message id, written in the same transaction as its effects.
CREATE TABLE IF NOT EXISTS "{schema}".inbox (
    message_id   uuid PRIMARY KEY,
    message_type text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
