-- What QIDO-RS matches and returns (PS3.18 10.6, Tables 6.7.1-2, -2a, -2b), read at ingest from
-- the one walk over each data set and, for derived instances, from the data set the pipeline
-- built: queries are answered from these rows and never open a file. Rows recorded before this
-- migration have NULLs here (their files still hold the values).

-- Patient and study (Study Root: patient attributes are study attributes)
ALTER TABLE instances ADD COLUMN patient_name TEXT;
ALTER TABLE instances ADD COLUMN patient_id TEXT;
ALTER TABLE instances ADD COLUMN patient_birth_date TEXT;
ALTER TABLE instances ADD COLUMN patient_sex TEXT;
ALTER TABLE instances ADD COLUMN study_date TEXT;
ALTER TABLE instances ADD COLUMN study_time TEXT;
ALTER TABLE instances ADD COLUMN accession_number TEXT;
ALTER TABLE instances ADD COLUMN study_id TEXT;
ALTER TABLE instances ADD COLUMN study_description TEXT;
ALTER TABLE instances ADD COLUMN referring_physician_name TEXT;
-- Series
ALTER TABLE instances ADD COLUMN modality TEXT;
ALTER TABLE instances ADD COLUMN series_description TEXT;
ALTER TABLE instances ADD COLUMN series_number INTEGER;
ALTER TABLE instances ADD COLUMN series_date TEXT;
ALTER TABLE instances ADD COLUMN series_time TEXT;
ALTER TABLE instances ADD COLUMN pps_start_date TEXT;
ALTER TABLE instances ADD COLUMN pps_start_time TEXT;
-- Instance; Synthetic Data (0008,001C) and Conversion Type (0008,0064) with Image Type are what
-- mark a derived series as AI-generated in every answer.
ALTER TABLE instances ADD COLUMN instance_number INTEGER;
ALTER TABLE instances ADD COLUMN image_laterality TEXT;
ALTER TABLE instances ADD COLUMN view_position TEXT;
ALTER TABLE instances ADD COLUMN image_rows INTEGER;
ALTER TABLE instances ADD COLUMN image_columns INTEGER;
ALTER TABLE instances ADD COLUMN bits_allocated INTEGER;
ALTER TABLE instances ADD COLUMN number_of_frames INTEGER;
ALTER TABLE instances ADD COLUMN synthetic_data TEXT;
ALTER TABLE instances ADD COLUMN conversion_type TEXT;

-- The matching keys clients use most (OHIF: StudyInstanceUID, PatientID; worklists: dates,
-- accession numbers, modality). Series already has instances_series. The study index also
-- holds what the study list is ordered by (newest first), so a page of studies is chosen from
-- the index alone before only its studies are aggregated.
CREATE INDEX instances_study ON instances (study_uid, study_date, study_time);
CREATE INDEX instances_patient_id ON instances (patient_id);
CREATE INDEX instances_study_date ON instances (study_date);
CREATE INDEX instances_accession ON instances (accession_number);
CREATE INDEX instances_modality ON instances (modality);
