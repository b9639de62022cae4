-- Orders are kept for good (every release adds one), so the lookup of the order covering a grant,
-- made before each grant call, must be an index lookup whatever their number: each branch of
-- orders.covering has an index of its own.
CREATE INDEX revocation_orders_grant ON "grant".revocation_orders (grant_id) WHERE grant_id IS NOT NULL;
