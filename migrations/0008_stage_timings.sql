-- How long each stage of a job's attempt took (JSON: prepare_ms, inference_ms, postprocess_ms,
-- encode_ms), kept on the event that ended it, so that a job's history shows where its time went.
ALTER TABLE job_events ADD COLUMN stages TEXT;
