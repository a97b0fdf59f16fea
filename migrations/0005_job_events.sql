-- What happened to each job and export: one row per change of its state, written by the queue
-- (src/queue/lease.rs) in the transaction of the change. A row's columns say only where it
-- stands now; these rows are its history (`GET /api/jobs/{id}`): attempts, errors, waits.
CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL CHECK (kind IN ('job', 'export')),
    -- jobs.id or exports.id
    work_id  INTEGER NOT NULL,
    -- claimed, done, failed (queued again), expired (lease lost: worker died), released
    -- (shutdown), dead, retried (by an operator), cancelled (by an operator)
    event    TEXT NOT NULL,
    at       INTEGER NOT NULL,
    owner    TEXT,
    error    TEXT
);
CREATE INDEX job_events_of ON job_events (kind, work_id, id);
