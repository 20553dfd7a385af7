-- What a run's stored results cost so far, bumped with the other counters by
-- the rows really inserted, so the worker can stop a run at its cost cap
-- (`options.max_cost_usd`) without summing the results table.
ALTER TABLE runs ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
