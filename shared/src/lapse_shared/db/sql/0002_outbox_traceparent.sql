-- The W3C trace context of the change that queued the row, sent as the message's `traceparent`.
ALTER TABLE "{schema}".outbox ADD COLUMN IF NOT EXISTS traceparent text;
