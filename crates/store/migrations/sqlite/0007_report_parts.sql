-- A report's document in parts (see the Postgres migration of the same name).
ALTER TABLE reports ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';

CREATE TABLE report_parts (
    report_id TEXT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    part      INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (report_id, part)
);
