"""PostgreSQL helpers: pool, forward-only migrations, transactional outbox and idempotent inbox."""
