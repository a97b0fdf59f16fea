//! Ingest: what happens to each C-STORE between the wire and the acknowledgement.
//!
//! Order matters for the promise "nothing acknowledged is lost": check the data set, write the
//! file durably, commit its rows (instance, and a job for a low-energy image) in one SQLite
//! transaction, and only then answer success.

use std::sync::Arc;
use std::time::Instant;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tracing::{debug, info, warn};
use vcnode_scp::{status, trim_value, ReceivedInstance, StoreHandler, StoreOutcome};

use crate::config::JobSelect;
use crate::queue::{NewInstance, Queue};
use crate::store::{InstanceStore, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

mod image_type;
pub use image_type::{becomes_job, ImageType};

/// The node's C-STORE handler.
pub struct Ingest {
    pub store: InstanceStore,
    pub queue: Queue,
    pub select: JobSelect,
    pub max_attempts: u32,
    /// Refuse new instances below this much free space on data_dir's file system.
    pub min_free_bytes: u64,
    /// Woken when a job is queued, so an idle worker starts at once.
    pub wake: Arc<tokio::sync::Notify>,
}

/// A data set that passed the checks, with what the rows need.
struct Checked {
    study_uid: String,
    series_uid: String,
    image_type: ImageType,
}

/// Why a data set is refused, already mapped to its C-STORE status.
struct Refusal(StoreOutcome);

fn refuse(status: u16, comment: impl Into<String>) -> Refusal {
    Refusal(StoreOutcome::failure(status, comment))
}

/// Parses the data set in its transfer syntax and checks what the node relies on.
fn check(inst: &ReceivedInstance) -> Result<Checked, Refusal> {
    let ts = TransferSyntaxRegistry
        .get(&inst.transfer_syntax)
        .ok_or_else(|| refuse(status::CANNOT_UNDERSTAND, "unknown transfer syntax"))?;
    let obj = InMemDicomObject::read_dataset_with_ts(&inst.dataset[..], ts)
        .map_err(|e| refuse(status::CANNOT_UNDERSTAND, format!("cannot parse data set: {e}")))?;
    let text = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| trim_value(&s).to_string())
            .filter(|s| !s.is_empty())
    };
    let mismatch = |what: String| refuse(status::DATASET_DOES_NOT_MATCH_SOP_CLASS, what);
    let sop_class = text(tags::SOP_CLASS_UID).ok_or_else(|| mismatch("SOP Class UID missing".into()))?;
    if sop_class != inst.sop_class_uid {
        return Err(mismatch(format!(
            "SOP Class UID {sop_class} differs from the request's"
        )));
    }
    let sop_instance =
        text(tags::SOP_INSTANCE_UID).ok_or_else(|| mismatch("SOP Instance UID missing".into()))?;
    if sop_instance != inst.sop_instance_uid {
        return Err(mismatch("SOP Instance UID differs from the request's".into()));
    }
    let study_uid =
        text(tags::STUDY_INSTANCE_UID).ok_or_else(|| mismatch("Study Instance UID missing".into()))?;
    let series_uid =
        text(tags::SERIES_INSTANCE_UID).ok_or_else(|| mismatch("Series Instance UID missing".into()))?;
    for (name, uid) in [("Study", &study_uid), ("Series", &series_uid)] {
        if !vcnode_scp::is_valid_uid(uid) {
            return Err(mismatch(format!("{name} Instance UID is not a valid UID")));
        }
    }
    // Image Pixel module (PS3.3 C.7.6.3): every image class the node accepts needs it.
    let uint = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<u32>().ok());
    let (Some(rows), Some(cols), Some(bits_allocated), Some(samples)) = (
        uint(tags::ROWS),
        uint(tags::COLUMNS),
        uint(tags::BITS_ALLOCATED),
        uint(tags::SAMPLES_PER_PIXEL),
    ) else {
        return Err(mismatch(
            "Image Pixel module incomplete (Rows, Columns, Bits Allocated, Samples per Pixel)".into(),
        ));
    };
    if text(tags::PHOTOMETRIC_INTERPRETATION).is_none() {
        return Err(mismatch("Photometric Interpretation missing".into()));
    }
    let pixels = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| mismatch("Pixel Data missing".into()))?;
    if rows == 0 || cols == 0 || !matches!(bits_allocated, 1 | 8 | 16 | 32) {
        return Err(mismatch(format!(
            "implausible image geometry {rows}x{cols}, {bits_allocated} bits allocated"
        )));
    }
    if !ts.is_encapsulated_pixel_data() {
        let frames = text(tags::NUMBER_OF_FRAMES)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(1);
        let expected =
            (rows as u64 * cols as u64 * samples as u64 * frames * bits_allocated as u64).div_ceil(8);
        let got = pixels.value().to_bytes().map(|b| b.len() as u64).unwrap_or(0);
        if got < expected {
            return Err(refuse(
                status::CANNOT_UNDERSTAND,
                format!("Pixel Data holds {got} bytes, {expected} expected"),
            ));
        }
    }
    Ok(Checked {
        study_uid,
        series_uid,
        image_type: ImageType::from_values(
            obj.element(tags::IMAGE_TYPE)
                .ok()
                .and_then(|e| e.to_multi_str().ok())
                .as_deref(),
        ),
    })
}

impl Ingest {
    async fn ingest(&self, inst: ReceivedInstance) -> Result<StoreOutcome, Refusal> {
        let started = Instant::now();
        if !vcnode_scp::is_valid_uid(&inst.sop_instance_uid) {
            return Err(refuse(
                status::CANNOT_UNDERSTAND,
                "Affected SOP Instance UID is not a valid UID",
            ));
        }
        let internal = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "ingest failed");
            refuse(status::PROCESSING_FAILURE, format!("vcnode: {e}"))
        };
        if self
            .queue
            .instance_exists(&inst.sop_instance_uid)
            .await
            .map_err(|e| internal(&e))?
        {
            info!(sop_instance = %inst.sop_instance_uid, calling_ae = %inst.calling_ae_title, "duplicate instance acknowledged; already stored");
            return Ok(StoreOutcome::success());
        }
        let free = self.store.free_bytes().map_err(|e| internal(&e))?;
        if free < self.min_free_bytes {
            let (free_mb, watermark_mb) = (free >> 20, self.min_free_bytes >> 20);
            warn!(
                free_mb,
                watermark_mb, "refusing C-STORE: data_dir is below its free-space watermark"
            );
            return Err(refuse(
                status::OUT_OF_RESOURCES,
                format!("vcnode disk full ({free_mb} MiB free, needs {watermark_mb} MiB)"),
            ));
        }

        // Parsing and the durable write are CPU and fsync work: keep them off the runtime.
        let store = self.store.clone();
        let inst = Arc::new(inst);
        let job_inst = inst.clone();
        let (checked, relative, bytes) = tokio::task::spawn_blocking(move || {
            let inst = job_inst;
            let checked = check(&inst)?;
            let relative =
                InstanceStore::relative_path(&checked.study_uid, &checked.series_uid, &inst.sop_instance_uid)
                    .map_err(|e| refuse(status::DATASET_DOES_NOT_MATCH_SOP_CLASS, e.to_string()))?;
            let meta = FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(inst.sop_class_uid.as_str())
                .media_storage_sop_instance_uid(inst.sop_instance_uid.as_str())
                .transfer_syntax(inst.transfer_syntax.as_str())
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
                .source_application_entity_title(inst.calling_ae_title.as_str())
                .build()
                .map_err(|e| refuse(status::PROCESSING_FAILURE, e.to_string()))?;
            let bytes = store.write_part10(&relative, &meta, &inst.dataset).map_err(|e| {
                warn!(error = %e, "could not store instance");
                if e.is_out_of_space() {
                    refuse(status::OUT_OF_RESOURCES, "vcnode disk full")
                } else {
                    refuse(status::PROCESSING_FAILURE, format!("vcnode could not store: {e}"))
                }
            })?;
            Ok::<_, Refusal>((checked, relative, bytes))
        })
        .await
        .map_err(|e| internal(&e))??;

        let job = becomes_job(self.select, &inst.sop_class_uid, &checked.image_type);
        let recorded = self
            .queue
            .record_received(
                &NewInstance {
                    sop_instance_uid: inst.sop_instance_uid.clone(),
                    sop_class_uid: inst.sop_class_uid.clone(),
                    study_uid: checked.study_uid,
                    series_uid: checked.series_uid,
                    transfer_syntax: inst.transfer_syntax.clone(),
                    path: relative.to_string_lossy().into_owned(),
                    bytes: bytes as i64,
                    image_type: Some(checked.image_type.to_string()),
                    calling_ae: Some(inst.calling_ae_title.clone()),
                },
                job.then_some(self.max_attempts),
            )
            .await
            .map_err(|e| internal(&e))?;
        info!(
            sop_instance = %inst.sop_instance_uid,
            sop_class = %inst.sop_class_uid,
            transfer_syntax = %inst.transfer_syntax,
            calling_ae = %inst.calling_ae_title,
            bytes,
            job = ?recorded.job_id,
            ms = started.elapsed().as_millis() as u64,
            "stored instance"
        );
        debug!(image_type = %checked.image_type, "image type");
        if recorded.job_id.is_some() {
            self.wake.notify_one();
        }
        Ok(StoreOutcome::success())
    }
}

#[async_trait::async_trait]
impl StoreHandler for Ingest {
    async fn store(&self, inst: ReceivedInstance) -> StoreOutcome {
        let uid = inst.sop_instance_uid.clone();
        let peer = inst.calling_ae_title.clone();
        match self.ingest(inst).await {
            Ok(outcome) => outcome,
            Err(Refusal(outcome)) => {
                warn!(
                    sop_instance = %uid, calling_ae = %peer,
                    status = format!("{:#06x}", outcome.status),
                    reason = outcome.comment.as_deref().unwrap_or(""),
                    "C-STORE refused"
                );
                outcome
            }
        }
    }
}
