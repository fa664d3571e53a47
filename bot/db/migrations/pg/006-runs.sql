-- 006 on PostgreSQL: the twin of ../006-runs.sql (runs with leases, and who owns a job).

CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL,
    deliver_to  TEXT
);

ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN deliver_to TEXT;
