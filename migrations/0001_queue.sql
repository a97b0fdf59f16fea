-- Instances the node holds (received sources now; derived results later), the jobs that turn a
-- low-energy source into a derived instance, and one export row per (derived instance,
-- destination). Times are Unix milliseconds (UTC) so leases and backoff compare as integers.

CREATE TABLE instances (
    sop_instance_uid  TEXT PRIMARY KEY NOT NULL,
    sop_class_uid     TEXT NOT NULL,
    study_uid         TEXT NOT NULL,
    series_uid        TEXT NOT NULL,
    transfer_syntax   TEXT NOT NULL,
    -- 'received' for what peers sent, 'derived' for what the node made
    origin            TEXT NOT NULL CHECK (origin IN ('received', 'derived')),
    -- path relative to data_dir
    path              TEXT NOT NULL,
    bytes             INTEGER NOT NULL,
    image_type        TEXT,
    calling_ae        TEXT,
    -- for a derived instance: the source instance it was made from
    source_uid        TEXT REFERENCES instances (sop_instance_uid),
    created_at        INTEGER NOT NULL
);
CREATE INDEX instances_series ON instances (series_uid);

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    -- one job per source instance: a duplicate C-STORE never queues a second one
    source_uid        TEXT NOT NULL UNIQUE REFERENCES instances (sop_instance_uid),
    state             TEXT NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    run_at            INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
-- the claim scans runnable jobs by time
CREATE INDEX jobs_runnable ON jobs (state, run_at);

CREATE TABLE exports (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_uid      TEXT NOT NULL REFERENCES instances (sop_instance_uid),
    destination       TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    run_at            INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (instance_uid, destination)
);
CREATE INDEX exports_runnable ON exports (state, run_at);
