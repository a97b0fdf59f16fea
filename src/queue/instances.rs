//! Lookups of held instances for WADO-RS: which files make up a study, a series or one
//! instance, with what a retrieval needs to know before opening them (transfer syntax, path).

use super::{Queue, Result};

/// One held instance (received or derived) as WADO-RS serves it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    /// The transfer syntax the data set is stored in.
    pub transfer_syntax: String,
    /// Relative to data_dir.
    pub path: String,
}

const COLUMNS: &str =
    "sop_instance_uid, sop_class_uid, study_uid, series_uid, transfer_syntax, path FROM instances";

impl Queue {
    /// The instances of a study, series by series, in the order they arrived.
    pub async fn study_instances(&self, study_uid: &str) -> Result<Vec<StoredInstance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} WHERE study_uid = ? ORDER BY series_uid, created_at, sop_instance_uid"
        ))
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?)
    }

    /// The instances of a series of a study, in the order they arrived.
    pub async fn series_instances(&self, study_uid: &str, series_uid: &str) -> Result<Vec<StoredInstance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} WHERE series_uid = ? AND study_uid = ?
             ORDER BY created_at, sop_instance_uid"
        ))
        .bind(series_uid)
        .bind(study_uid)
        .fetch_all(self.pool())
        .await?)
    }

    /// One instance, if it belongs to that study and series.
    pub async fn stored_instance(
        &self,
        study_uid: &str,
        series_uid: &str,
        sop_instance_uid: &str,
    ) -> Result<Option<StoredInstance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} WHERE sop_instance_uid = ? AND series_uid = ? AND study_uid = ?"
        ))
        .bind(sop_instance_uid)
        .bind(series_uid)
        .bind(study_uid)
        .fetch_optional(self.pool())
        .await?)
    }
}
