-- The SQLite twin of migrations/postgres/0004_suite_tests.sql: a suite's
-- tests, one row each, written as the suite is uploaded.
CREATE TABLE suite_tests (
    run_id     TEXT NOT NULL,
    test_index INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (run_id, test_index)
) WITHOUT ROWID;
