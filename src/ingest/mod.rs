//! Ingest: what happens to each C-STORE between the wire and the acknowledgement.
//!
//! Order matters for the promise "nothing acknowledged is lost": check the data set, write the
//! file durably, commit its rows (instance, and a job for a low-energy image) in one SQLite
//! transaction, and only then answer success.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tracing::{debug, info, warn};
use vcnode_scp::{status, ReceivedInstance, StoreHandler, StoreOutcome};

use crate::config::JobSelect;
use crate::metrics::Protocol;
use crate::queue::{IndexedAttributes, NewInstance, Queue};
use crate::store::{InstanceStore, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

mod image_type;
pub mod part10;
pub mod scan;
pub use image_type::{becomes_job, ImageType};
pub use scan::Limits;

/// Deflated Explicit VR Little Endian.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// The node's C-STORE handler (the one ingest: DIMSE C-STORE and, later, STOW-RS go through
/// [`Ingest::ingest`]).
pub struct Ingest {
    pub store: InstanceStore,
    pub queue: Queue,
    pub select: JobSelect,
    pub max_attempts: u32,
    /// Refuse new instances below this much free space on data_dir's file system.
    pub min_free_bytes: u64,
    pub limits: Limits,
    /// Woken when a job is queued, so an idle worker starts at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// SOP Instance UIDs being stored, so that two concurrent stores of one instance give one
    /// file, one row and one job: the second waits and is acknowledged as a duplicate.
    pub in_flight: UidLocks,
}

/// One async lock per SOP Instance UID in flight; entries go when their last holder does.
#[derive(Default)]
pub struct UidLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl UidLocks {
    async fn hold<T>(&self, uid: &str, work: impl std::future::Future<Output = T>) -> T {
        let lock = self
            .0
            .lock()
            .expect("uid lock table")
            .entry(uid.to_string())
            .or_default()
            .clone();
        let result = {
            let _held = lock.lock().await;
            work.await
        };
        let mut table = self.0.lock().expect("uid lock table");
        // Ours and the table's: nobody else waits for this UID.
        if Arc::strong_count(&lock) == 2 {
            table.remove(uid);
        }
        result
    }
}

/// A data set that passed the checks, with what the rows need.
struct Checked {
    study_uid: String,
    series_uid: String,
    image_type: ImageType,
    /// What the DICOMweb index keeps, from the same walk.
    attrs: IndexedAttributes,
}

/// Why a data set is refused, already mapped to its C-STORE status. Comments name what is
/// wrong, never an element's value or a path of the node's.
struct Refusal(StoreOutcome);

fn refuse(status: u16, comment: impl Into<String>) -> Refusal {
    Refusal(StoreOutcome::failure(status, comment))
}

/// Walks the spooled data set (inflating a deflated one under the limit) and checks what the
/// node relies on, without loading it. Blocking.
fn check(inst: &ReceivedInstance, limits: &Limits) -> Result<Checked, Refusal> {
    let ts = TransferSyntaxRegistry
        .get(&inst.transfer_syntax)
        .ok_or_else(|| refuse(status::CANNOT_UNDERSTAND, "unknown transfer syntax"))?;
    let internal = |e: std::io::Error| {
        warn!(error = %e, "cannot read a spooled data set");
        refuse(status::PROCESSING_FAILURE, "vcnode could not read the data set")
    };
    let file = BufReader::new(File::open(inst.dataset.path()).map_err(internal)?);
    let scanned = if inst.transfer_syntax == DEFLATED {
        scan::scan_deflated(file, limits)
    } else {
        scan::scan(file, inst.dataset.len(), ts, limits)
    }
    .map_err(|e| {
        debug!(error = %e, "data set refused");
        // Error Comment (LO) holds 64 characters: say what, not how much.
        refuse(
            status::CANNOT_UNDERSTAND,
            match e {
                scan::ScanError::TooDeep(_) => "sequences nested deeper than this node accepts",
                scan::ScanError::Malformed => "data set truncated or malformed",
                scan::ScanError::InflatesTooFar(_) => "deflated data set inflates past this node's limit",
                scan::ScanError::ImageTooLarge { .. } => "image larger than this node accepts",
                scan::ScanError::TooManyElements => "more data elements than this node accepts",
                scan::ScanError::UnreadableValue(_) => "an image attribute is unreadable",
            },
        )
    })?;
    let mismatch = |what: &str| refuse(status::DATASET_DOES_NOT_MATCH_SOP_CLASS, what);
    let present = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let sop_class = present(&scanned.sop_class_uid).ok_or_else(|| mismatch("SOP Class UID missing"))?;
    if sop_class != inst.sop_class_uid {
        return Err(mismatch("SOP Class UID differs from the request's"));
    }
    let sop_instance =
        present(&scanned.sop_instance_uid).ok_or_else(|| mismatch("SOP Instance UID missing"))?;
    if sop_instance != inst.sop_instance_uid {
        return Err(mismatch("SOP Instance UID differs from the request's"));
    }
    let study_uid = present(&scanned.study_uid).ok_or_else(|| mismatch("Study Instance UID missing"))?;
    let series_uid = present(&scanned.series_uid).ok_or_else(|| mismatch("Series Instance UID missing"))?;
    for (what, uid) in [
        ("Study Instance UID is not a valid UID", &study_uid),
        ("Series Instance UID is not a valid UID", &series_uid),
    ] {
        if !vcnode_scp::is_valid_uid(uid) {
            return Err(mismatch(what));
        }
    }
    // Image Pixel module (PS3.3 C.7.6.3): every image class the node accepts needs it.
    let (Some(rows), Some(cols), Some(bits_allocated), Some(samples)) = (
        scanned.rows,
        scanned.columns,
        scanned.bits_allocated,
        scanned.samples_per_pixel,
    ) else {
        return Err(mismatch(
            "Image Pixel module incomplete (Rows, Columns, Bits Allocated, Samples per Pixel)",
        ));
    };
    if present(&scanned.photometric).is_none() {
        return Err(mismatch("Photometric Interpretation missing"));
    }
    let Some(pixel_len) = scanned.pixel_data_len else {
        return Err(mismatch("Pixel Data missing"));
    };
    if rows == 0 || cols == 0 || !matches!(bits_allocated, 1 | 8 | 16 | 32) {
        return Err(mismatch("implausible image geometry or Bits Allocated"));
    }
    if !ts.is_encapsulated_pixel_data() {
        let frames = scanned.number_of_frames.unwrap_or(1);
        let expected =
            (rows as u64 * cols as u64 * samples as u64 * frames * bits_allocated as u64).div_ceil(8);
        if pixel_len.unwrap_or(0) < expected {
            return Err(refuse(
                status::CANNOT_UNDERSTAND,
                "Pixel Data shorter than its Rows, Columns and frames declare",
            ));
        }
    }
    Ok(Checked {
        study_uid,
        series_uid,
        image_type: ImageType::from_values(scanned.image_type.as_deref()),
        attrs: scanned.indexed_attributes(),
    })
}

impl Ingest {
    async fn ingest(&self, inst: ReceivedInstance, protocol: Protocol) -> Result<StoreOutcome, Refusal> {
        if !vcnode_scp::is_valid_uid(&inst.sop_instance_uid) {
            return Err(refuse(
                status::CANNOT_UNDERSTAND,
                "Affected SOP Instance UID is not a valid UID",
            ));
        }
        let uid = inst.sop_instance_uid.clone();
        self.in_flight.hold(&uid, self.ingest_held(inst, protocol)).await
    }

    /// [`Ingest::ingest`] while holding the instance's UID lock.
    async fn ingest_held(&self, inst: ReceivedInstance, protocol: Protocol) -> Result<StoreOutcome, Refusal> {
        let started = Instant::now();
        // The reason goes to the log; the peer only learns that the node failed.
        let internal = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "ingest failed");
            refuse(status::PROCESSING_FAILURE, "vcnode internal error")
        };
        if self
            .queue
            .instance_exists(&inst.sop_instance_uid)
            .await
            .map_err(|e| internal(&e))?
        {
            info!(sop_instance = %inst.sop_instance_uid, calling_ae = %inst.calling_ae_title, "duplicate instance acknowledged; already stored");
            metrics::counter!(crate::metrics::INSTANCES_DUPLICATE, "protocol" => protocol.as_str())
                .increment(1);
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
        let limits = self.limits;
        let inst = Arc::new(inst);
        let job_inst = inst.clone();
        let (checked, relative, bytes) = tokio::task::spawn_blocking(move || {
            let inst = job_inst;
            let checked = check(&inst, &limits)?;
            let relative =
                InstanceStore::relative_path(&checked.study_uid, &checked.series_uid, &inst.sop_instance_uid)
                    .map_err(|_| refuse(status::DATASET_DOES_NOT_MATCH_SOP_CLASS, "a UID is not valid"))?;
            let meta = FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(inst.sop_class_uid.as_str())
                .media_storage_sop_instance_uid(inst.sop_instance_uid.as_str())
                .transfer_syntax(inst.transfer_syntax.as_str())
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
                .source_application_entity_title(inst.calling_ae_title.as_str())
                .build()
                .map_err(|e| refuse(status::PROCESSING_FAILURE, e.to_string()))?;
            let mut spooled = File::open(inst.dataset.path()).map_err(|e| {
                warn!(error = %e, "cannot read a spooled data set");
                refuse(status::PROCESSING_FAILURE, "vcnode could not read the data set")
            })?;
            let bytes = store
                .write_part10_from(&relative, &meta, &mut spooled)
                .map_err(|e| {
                    warn!(error = %e, "could not store instance");
                    if e.is_out_of_space() {
                        refuse(status::OUT_OF_RESOURCES, "vcnode disk full")
                    } else {
                        refuse(status::PROCESSING_FAILURE, "vcnode could not store the instance")
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
                    attrs: checked.attrs,
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
        if recorded.new_instance {
            metrics::counter!(crate::metrics::INSTANCES_RECEIVED, "protocol" => protocol.as_str())
                .increment(1);
            metrics::counter!(crate::metrics::INSTANCES_RECEIVED_BYTES, "protocol" => protocol.as_str())
                .increment(bytes);
        } else {
            metrics::counter!(crate::metrics::INSTANCES_DUPLICATE, "protocol" => protocol.as_str())
                .increment(1);
        }
        Ok(StoreOutcome::success())
    }
}

impl Ingest {
    /// Ingests an instance that came by `protocol` (what the metrics count it as). The
    /// [`StoreHandler`] implementation is the DIMSE SCP's door.
    pub async fn store_from(&self, protocol: Protocol, inst: ReceivedInstance) -> StoreOutcome {
        let uid = inst.sop_instance_uid.clone();
        let sender = inst.calling_ae_title.clone();
        match self.ingest(inst, protocol).await {
            Ok(outcome) => outcome,
            Err(Refusal(outcome)) => {
                metrics::counter!(
                    crate::metrics::INSTANCES_REFUSED,
                    "protocol" => protocol.as_str(),
                    "status" => format!("{:04X}", outcome.status)
                )
                .increment(1);
                log_refusal(
                    &uid,
                    &sender,
                    outcome.status,
                    outcome.comment.as_deref().unwrap_or(""),
                );
                outcome
            }
        }
    }

    /// This ingest as the [`StoreHandler`] of instances that come by `protocol`.
    pub fn via(self: &Arc<Self>, protocol: Protocol) -> Via {
        Via {
            ingest: self.clone(),
            protocol,
        }
    }
}

/// The storage SCP's handler: C-STORE over DIMSE.
#[async_trait::async_trait]
impl StoreHandler for Ingest {
    async fn store(&self, inst: ReceivedInstance) -> StoreOutcome {
        self.store_from(Protocol::Dimse, inst).await
    }
}

/// [`Ingest`] for instances that come by another protocol (a pull's WADO-RS).
pub struct Via {
    ingest: Arc<Ingest>,
    protocol: Protocol,
}

#[async_trait::async_trait]
impl StoreHandler for Via {
    async fn store(&self, inst: ReceivedInstance) -> StoreOutcome {
        self.ingest.store_from(self.protocol, inst).await
    }
}

/// The one log line of a refused instance, whichever way it came (C-STORE, STOW-RS, a pull):
/// `calling_ae` is the sender it is routed as (a calling AE title, `[dicomweb] sender`, a
/// source's name).
pub fn log_refusal(sop_instance: &str, calling_ae: &str, status: u16, reason: &str) {
    warn!(
        sop_instance,
        calling_ae,
        status = format!("{status:#06x}"),
        reason,
        "instance refused"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    use std::path::PathBuf;
    use vcnode_scp::SpooledDataSet;

    /// Eight C-STOREs of one SOP Instance UID at once, each naming another series (so that
    /// without the UID lock each would write its own file): one file, one row, one job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_stores_of_one_instance_give_one_file_row_and_job() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("var");
        let store = InstanceStore::open(&data_dir).unwrap();
        let queue = Queue::open(&data_dir).await.unwrap();
        let ingest = Arc::new(Ingest {
            store: store.clone(),
            queue: queue.clone(),
            select: JobSelect::LowEnergy,
            max_attempts: 3,
            min_free_bytes: 0,
            limits: Limits {
                max_sequence_depth: 16,
                max_pixel_bytes: 64 << 20,
                max_inflated_bytes: 64 << 20,
            },
            wake: Default::default(),
            in_flight: Default::default(),
        });
        let spec = crate::fixture::MammogramSpec::low_energy(7);
        let mut stores = Vec::new();
        for n in 0..8 {
            let mut obj = crate::fixture::mammogram(&spec);
            let sop = obj
                .meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string();
            obj.put(DataElement::new(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(format!("1.2.826.0.1.3680043.10.1.{n}")),
            ));
            let path = store
                .spool_dir()
                .join(format!("{}.rx", uuid::Uuid::new_v4().simple()));
            let mut bytes = Vec::new();
            obj.write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap();
            std::fs::write(&path, &bytes).unwrap();
            stores.push(ReceivedInstance {
                calling_ae_title: "MODALITY".into(),
                peer_addr: "127.0.0.1:1".parse().unwrap(),
                sop_class_uid: spec.sop_class_uid.clone(),
                sop_instance_uid: sop,
                transfer_syntax: vcnode_scp::EXPLICIT_VR_LE.into(),
                dataset: SpooledDataSet::adopt(path).unwrap(),
            });
        }
        // All eight are past their duplicate check before any is recorded, as when eight
        // associations deliver the same instance at once.
        let outcomes = futures_join_all(stores.into_iter().map(|inst| {
            let ingest = ingest.clone();
            async move { ingest.store(inst).await }
        }))
        .await;
        for outcome in outcomes {
            assert_eq!(outcome.status, status::SUCCESS);
        }
        let files = walk(&data_dir.join(crate::store::INSTANCES_DIR));
        assert_eq!(files.len(), 1, "{files:?}");
        let (jobs, _) = queue
            .job_views(&crate::queue::ListFilter::default())
            .await
            .unwrap();
        assert_eq!(jobs, 1);
        let spooled = std::fs::read_dir(store.spool_dir()).unwrap().count();
        assert_eq!(spooled, 0, "spool files are removed once stored");
        assert!(ingest.in_flight.0.lock().unwrap().is_empty());
    }

    async fn futures_join_all<F: std::future::Future + Send + 'static>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
