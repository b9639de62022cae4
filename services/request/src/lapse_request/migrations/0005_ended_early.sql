-- The kill switch and release cannot fail (issue 13): lateness in 64 bits, and an early end
-- recorded as how early (a grant.revoked of a 40-day grant ended on day one is 3.4e9 ms early).
ALTER TABLE request.requests ALTER COLUMN lateness_ms TYPE bigint;
ALTER TABLE request.requests ADD COLUMN ended_early_ms bigint;
UPDATE request.requests SET ended_early_ms = -lateness_ms, lateness_ms = 0 WHERE lateness_ms < 0;
