-- What the reconciler needs to tell a stuck run from a busy one, and what a
-- run that ended `failed` says about why.
--   status_reason: why the run ended as it did (empty unless it failed).
--   active_at:     its last sign of life: created, a result stored, its
--                  missing work re-driven.
--   redrives:      how many times its missing work was re-driven,
--   redriven_at:   and when last.
ALTER TABLE runs ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN redriven_at TIMESTAMPTZ;
ALTER TABLE runs ADD COLUMN active_at TIMESTAMPTZ;
UPDATE runs SET active_at = COALESCE(finished_at, created_at);
UPDATE runs SET active_at = GREATEST(
    created_at,
    COALESCE((SELECT max(r.created_at) FROM results r WHERE r.run_id = runs.id), created_at))
WHERE status IN ('queued', 'running');
ALTER TABLE runs ALTER COLUMN active_at SET DEFAULT now();
ALTER TABLE runs ALTER COLUMN active_at SET NOT NULL;
-- The reconciler's question: which unfinished runs have been quiet longest.
CREATE INDEX runs_unfinished_active ON runs (active_at) WHERE status IN ('queued', 'running');
