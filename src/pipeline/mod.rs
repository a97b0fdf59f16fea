//! The processing pipeline: from a queued LE instance to a stored derived instance.
//!
//! Workers claim jobs under a lease that they renew while working. Decoding and
//! preprocessing, and postprocessing and encoding, run on the blocking pool; inference runs on
//! one model thread that batches ([`inference`]). A failure is retried with exponential
//! backoff until the job's attempts are spent, then the job is dead with its reason; an input
//! that cannot be decoded is dead at once. Derived UIDs are deterministic, so a job redone after
//! a crash yields the same instance, recorded once.

pub mod inference;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use tch::Tensor;
use tokio::sync::Notify;
use tracing::{info, warn};
use vcnode_models::preprocess::{plan, restore, to_model, Geometry, InputSpec};

use crate::derive::{self, DerivedKind, Synthesizer, SyntheticRc};
use crate::pixels::{self, WindowSource};
use crate::queue::{JobLease, NewInstance, Queue};
use crate::store::InstanceStore;
pub use inference::Inference;

/// Where the derived files go under data_dir.
pub const DERIVED_DIR: &str = "derived";

/// An LE image through decoding and preprocessing, ready for the model.
pub struct PreparedSource {
    pub source: FileDicomObject<InMemDicomObject>,
    pub input: Tensor,
    pub geometry: Geometry,
    pub window_note: String,
}

/// Why a job failed, and whether trying again can help.
#[derive(Debug)]
pub struct JobFailure {
    pub message: String,
    pub permanent: bool,
}

/// Decode and preprocess an LE file (blocking).
pub fn prepare_source(path: &Path, spec: &InputSpec) -> Result<PreparedSource, JobFailure> {
    let permanent = |message: String| JobFailure {
        message,
        permanent: true,
    };
    let source = dicom_object::open_file(path)
        .map_err(|e| permanent(format!("cannot read {}: {e}", path.display())))?;
    let image = pixels::decode(&source).map_err(|e| permanent(e.to_string()))?;
    let windowed = image.windowed();
    let geometry = plan(&windowed, image.rows, image.cols, spec);
    let window_note = match image.window_source {
        WindowSource::File => format!(
            "the file's VOI window {}/{}",
            image.window.center, image.window.width
        ),
        WindowSource::ValueRange => {
            "no VOI window in the file (e.g. For Processing): the full value range".into()
        }
        // The node reads DICOM only; rendered images are research data.
        WindowSource::Rendered => "a rendered image: its full range".into(),
    };
    Ok(PreparedSource {
        input: to_model(&windowed, &geometry, spec),
        source,
        geometry,
        window_note,
    })
}

/// Postprocess a model output (the synthetic RC, or the attention map) back to the LE's
/// geometry and build its derived instance (blocking).
pub fn derive_instance(
    prepared: &PreparedSource,
    output: &Tensor,
    spec: &InputSpec,
    synth: &Synthesizer,
    kind: DerivedKind,
) -> anyhow::Result<FileDicomObject<InMemDicomObject>> {
    let unit = match kind {
        DerivedKind::SyntheticRc => restore(output, &prepared.geometry, spec),
        // Attention is already in (0, 1): map it back without the RC denormalization.
        DerivedKind::AttentionMap => restore(
            output,
            &prepared.geometry,
            &InputSpec {
                normalization: vcnode_models::preprocess::Normalization::ZeroOne,
                ..*spec
            },
        ),
    };
    derive::build(
        &prepared.source,
        &SyntheticRc {
            rows: prepared.geometry.src_rows,
            cols: prepared.geometry.src_cols,
            unit: &unit,
            // The chest wall is on the left of the model input; in the source it is on the left
            // unless the image was mirrored.
            chest_wall_left: !prepared.geometry.flipped,
            input_window_note: &prepared.window_note,
        },
        synth,
        kind,
    )
}

/// The destinations for results of images from a calling AE title.
pub type Routes = Arc<dyn Fn(Option<&str>) -> Vec<String> + Send + Sync>;

/// Shared state of the workers.
pub struct Pipeline {
    pub queue: Queue,
    pub store: InstanceStore,
    pub inference: Inference,
    pub spec: InputSpec,
    pub synth: Synthesizer,
    pub lease: Duration,
    /// Also make the attention-map series.
    pub attention_map: bool,
    /// Routes: the destinations for results of images from a calling AE title.
    pub routes: Routes,
    pub export_max_attempts: u32,
    /// Woken by ingest when a job is queued.
    pub wake: Arc<Notify>,
}

impl Pipeline {
    /// Runs `workers` claim loops until the process ends.
    pub fn start(self: Arc<Self>, workers: usize) {
        for w in 0..workers.max(1) {
            let p = self.clone();
            let owner = format!("{}-w{w}", uuid::Uuid::new_v4().simple());
            tokio::spawn(async move { p.worker(owner).await });
        }
    }

    async fn worker(&self, owner: String) {
        loop {
            match self.queue.claim(&owner, self.lease).await {
                Ok(Some(lease)) => self.run_job(lease).await,
                Ok(None) => {
                    // Sleep until ingest queues a job, or poll for retries coming due.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot claim jobs");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn run_job(&self, lease: JobLease) {
        let job = lease.job_id;
        // Renew the lease while working, so that no other worker takes the job over.
        let renewer = {
            let (queue, mut held, every) = (self.queue.clone(), lease.clone(), self.lease / 3);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if !matches!(queue.renew(&mut held, every * 3).await, Ok(true)) {
                        break;
                    }
                }
            })
        };
        let result = self.process(&lease).await;
        renewer.abort();
        match result {
            Ok(()) => {}
            Err(f) => {
                let backoff = Duration::from_secs(2u64.saturating_pow(lease.attempt as u32).min(300));
                match self.queue.fail(&lease, &f.message, backoff, f.permanent).await {
                    Ok(state) => {
                        warn!(job, attempt = lease.attempt, state = %state, reason = %f.message, "job failed")
                    }
                    Err(e) => warn!(job, error = %e, "cannot record a job failure"),
                }
            }
        }
    }

    async fn process(&self, lease: &JobLease) -> Result<(), JobFailure> {
        let retry = |message: String| JobFailure {
            message,
            permanent: false,
        };
        let t0 = Instant::now();
        let (rel, calling_ae) = self
            .queue
            .instance_source(&lease.source_uid)
            .await
            .map_err(|e| retry(e.to_string()))?
            .ok_or_else(|| JobFailure {
                message: "source instance row missing".into(),
                permanent: true,
            })?;
        let destinations = (self.routes)(calling_ae.as_deref());
        let path = self.store.root().join(rel);
        let spec = self.spec;
        let prepared = tokio::task::spawn_blocking(move || prepare_source(&path, &spec))
            .await
            .map_err(|e| retry(e.to_string()))??;
        let t1 = Instant::now();
        let output = self
            .inference
            .synthesize(prepared.input.shallow_clone(), self.attention_map)
            .await
            .map_err(|e| retry(e.to_string()))?;
        let t2 = Instant::now();
        let (store, synth) = (self.store.clone(), self.synth.clone());
        let (derived, bytes, t3) = tokio::task::spawn_blocking(move || {
            let mut outputs = vec![(DerivedKind::SyntheticRc, output.image)];
            outputs.extend(output.attention.map(|a| (DerivedKind::AttentionMap, a)));
            let objects = outputs
                .iter()
                .map(|(kind, t)| derive_instance(&prepared, t, &spec, &synth, *kind))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let t3 = Instant::now();
            let mut rows = Vec::new();
            let mut total = 0;
            for obj in &objects {
                let derived = derived_record(obj)?;
                let mut bytes = Vec::new();
                obj.write_dataset_with_ts(
                    &mut bytes,
                    &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                )?;
                let size = store.write_part10(Path::new(&derived.path), obj.meta(), &bytes)?;
                total += size;
                rows.push(NewInstance {
                    bytes: size as i64,
                    ..derived
                });
            }
            Ok::<_, anyhow::Error>((rows, total, t3))
        })
        .await
        .map_err(|e| retry(e.to_string()))?
        .map_err(|e| retry(format!("{e:#}")))?;
        let t4 = Instant::now();
        let recorded = self
            .queue
            .complete_with_derived(
                lease,
                &derived,
                &lease.source_uid,
                &destinations,
                self.export_max_attempts,
            )
            .await
            .map_err(|e| retry(e.to_string()))?;
        if !recorded {
            warn!(
                job = lease.job_id,
                "lease lost while processing; another worker owns the job"
            );
        }
        info!(
            job = lease.job_id,
            derived = %derived[0].sop_instance_uid,
            instances = derived.len(),
            bytes,
            prepare_ms = (t1 - t0).as_millis() as u64,
            inference_ms = (t2 - t1).as_millis() as u64,
            postprocess_ms = (t3 - t2).as_millis() as u64,
            encode_ms = (t4 - t3).as_millis() as u64,
            total_ms = t0.elapsed().as_millis() as u64,
            "derived instance stored"
        );
        Ok(())
    }
}

/// The row of a derived instance (path relative to data_dir).
pub fn derived_record(obj: &FileDicomObject<InMemDicomObject>) -> anyhow::Result<NewInstance> {
    let get = |tag| -> anyhow::Result<String> {
        Ok(obj
            .element(tag)?
            .to_str()?
            .trim_end_matches(['\0', ' '])
            .to_string())
    };
    let (study, series, sop) = (
        get(tags::STUDY_INSTANCE_UID)?,
        get(tags::SERIES_INSTANCE_UID)?,
        get(tags::SOP_INSTANCE_UID)?,
    );
    let rel = InstanceStore::path_in(DERIVED_DIR, &study, &series, &sop)?;
    Ok(NewInstance {
        sop_instance_uid: sop,
        sop_class_uid: derive::SECONDARY_CAPTURE.into(),
        study_uid: study,
        series_uid: series,
        transfer_syntax: vcnode_scp::EXPLICIT_VR_LE.into(),
        path: rel.to_string_lossy().into_owned(),
        bytes: 0,
        image_type: Some("DERIVED\\SECONDARY".into()),
        calling_ae: None,
    })
}

/// `vcnode process`: the same pipeline, offline, on files. Returns the written paths.
pub fn process_files(
    files: &[PathBuf],
    out: &Path,
    model: &vcnode_models::model::RcModel,
    synth: &Synthesizer,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let spec = model.manifest.input;
    let mut written = Vec::new();
    for file in files {
        let prepared =
            prepare_source(file, &spec).map_err(|f| anyhow::anyhow!("{}: {}", file.display(), f.message))?;
        let output = model.synthesize(&prepared.input).get(0);
        let obj = derive_instance(&prepared, &output, &spec, synth, DerivedKind::SyntheticRc)
            .with_context(|| file.display().to_string())?;
        let sop = obj
            .meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
        let path = out.join(format!("{sop}.dcm"));
        obj.write_to_file(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
