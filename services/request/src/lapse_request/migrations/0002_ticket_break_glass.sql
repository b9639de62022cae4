-- Issue 3: the ticket reference and the break-glass flag a request carries to the policy.
ALTER TABLE request.requests
    ADD COLUMN ticket      text,
    ADD COLUMN break_glass boolean NOT NULL DEFAULT false;
