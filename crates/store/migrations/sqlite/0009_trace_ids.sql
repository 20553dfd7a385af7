-- The W3C trace id of a run's submission and of each result's task span,
-- so a user gets from a run or a failed case to its trace. Empty when the
-- work was not traced. Constant defaults: adding them rewrites nothing.
ALTER TABLE runs ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
ALTER TABLE results ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
