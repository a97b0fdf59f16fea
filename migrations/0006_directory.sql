-- The directory (src/directory): peers, destinations and routes, seeded from the
-- configuration file and changed through the admin API and the CLI.
CREATE TABLE directory (
    section TEXT NOT NULL CHECK (section IN ('peers', 'destinations', 'routes')),
    -- A peer's ae_title, a destination's name, a route's from_ae.
    key TEXT NOT NULL,
    -- The entry as JSON (the fields of its [[section]] table); NULL: deleted through the API
    -- or CLI, kept so that the configuration file does not bring it back.
    definition TEXT,
    -- 'config': from the file and never changed otherwise (it follows the file);
    -- 'api': created, changed or deleted through the API or CLI (the file no longer counts).
    origin TEXT NOT NULL CHECK (origin IN ('config', 'api')),
    -- The order entries are listed and routes applied in.
    position INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (section, key)
);

-- Bumped in the transaction of every change: a running node polls it to apply changes made by
-- another process (the CLI).
CREATE TABLE directory_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);
