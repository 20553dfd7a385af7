-- The SQLite twin of migrations/postgres/0005_test_digest.sql.
ALTER TABLE suite_tests ADD COLUMN digest INTEGER;
