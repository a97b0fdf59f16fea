-- /readyz proves the database writable by committing a write here: one row, its time updated.
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
