-- One lease policy for jobs and exports: a lease that expires (its worker died: abort, out of
-- memory, SIGKILL) counts as an attempt and is remembered here, so that work which keeps killing
-- its worker ends `dead` with "worker died N times" instead of being retried first forever.
ALTER TABLE jobs ADD COLUMN lease_expiries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN lease_expiries INTEGER NOT NULL DEFAULT 0;

-- Expired leases are looked up by state and expiry on every claim.
CREATE INDEX jobs_leases ON jobs (state, lease_expires_at);
CREATE INDEX exports_leases ON exports (state, lease_expires_at);
