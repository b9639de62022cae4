-- Who published each event: the AMQP user_id RabbitMQ validated. The authoritative copy is inside
-- the hashed entry (`published_by`); this column is for queries. Older entries have none.
ALTER TABLE audit.log ADD COLUMN published_by text;
