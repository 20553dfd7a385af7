-- Incremental rollups (`gauntlet_store::rollup`), as in the Postgres
-- migration of the same number: every result write adds its rows to these
-- in the same transaction. Rows stored before this migration are rolled up
-- here.

CREATE TABLE run_metrics (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    tokens_in       INTEGER NOT NULL,
    tokens_out      INTEGER NOT NULL,
    cost_usd        REAL NOT NULL,
    score_sum       REAL NOT NULL,
    score_sq_sum    REAL NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index, status)
) STRICT, WITHOUT ROWID;
INSERT INTO run_metrics
SELECT run_id, provider_index, prompt_index, status, COUNT(*), SUM(tokens_in), SUM(tokens_out),
       SUM(cost_usd), SUM(score), SUM(score * score)
FROM results GROUP BY run_id, provider_index, prompt_index, status;

-- Per provider × prompt × exact latency, the answered (not errored)
-- results: percentiles stay exact, in rows that grow with the distinct
-- latencies, not with the results.
CREATE TABLE run_latencies (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    latency_ms      INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index, latency_ms)
) STRICT, WITHOUT ROWID;
INSERT INTO run_latencies
SELECT run_id, provider_index, prompt_index, latency_ms, COUNT(*)
FROM results WHERE status <> 3 GROUP BY run_id, provider_index, prompt_index, latency_ms;

CREATE TABLE run_assertions (
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    metric          TEXT NOT NULL,
    passed          INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index, kind, metric, passed)
) STRICT, WITHOUT ROWID;
INSERT INTO run_assertions
SELECT r.run_id, r.provider_index, r.prompt_index,
       CASE WHEN json_type(a.value, '$.type') = 'text' THEN json_extract(a.value, '$.type') ELSE '' END,
       CASE WHEN json_type(a.value, '$.metric') = 'text' THEN json_extract(a.value, '$.metric') ELSE '' END,
       json_type(a.value, '$.pass') = 'true',
       COUNT(*)
FROM results r, json_each(CASE WHEN json_type(r.assertions) = 'array' THEN r.assertions ELSE '[]' END) a
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE TABLE run_test_tallies (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    test_index  INTEGER NOT NULL,
    unpassed    INTEGER NOT NULL,
    total       INTEGER NOT NULL,
    PRIMARY KEY (run_id, test_index)
) STRICT, WITHOUT ROWID;
CREATE INDEX run_test_tallies_unpassed ON run_test_tallies (run_id, unpassed DESC, test_index)
    WHERE unpassed > 0;
INSERT INTO run_test_tallies
SELECT run_id, test_index, SUM(status <> 1), COUNT(*)
FROM results GROUP BY run_id, test_index;

CREATE INDEX results_run_latency ON results (run_id, latency_ms DESC, task_index) WHERE status <> 3;
