-- Who may use the HTTP side (src/web/auth.rs) and what they did with it. Times are Unix ms.
-- No secret is stored as it is: tokens and session ids as SHA-256 (they are 256-bit random
-- values), passwords as argon2id PHC strings.

-- API tokens (`vcnode tokens create|list|revoke`). A revoked token stays listed.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'reader', 'uploader')),
    token_hash  BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

-- Local users for the login page (`vcnode users add|list|remove`).
CREATE TABLE users (
    name           TEXT PRIMARY KEY,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'reader', 'uploader')),
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

-- Browser sessions (cookie `vcnode_session`). A session belongs to a user or to a token it was
-- opened with; removing the user or revoking the token deletes its sessions.
CREATE TABLE sessions (
    id_hash     BLOB PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'token')),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'reader', 'uploader')),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_of ON sessions (kind, name);

-- Admin changes and DICOMweb queries, retrievals and stores (IHE ATNA-like audit). No patient
-- names or IDs: the study is named by its UID only.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    role       TEXT NOT NULL,
    -- query, retrieve, store, admin
    action     TEXT NOT NULL,
    method     TEXT NOT NULL,
    -- the route template, e.g. /dicomweb/studies/{study}/series
    route      TEXT NOT NULL,
    -- the path's key of an admin change (an AE title, a destination's name, a job number)
    resource   TEXT,
    study_uid  TEXT,
    status     INTEGER NOT NULL,
    client     TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
