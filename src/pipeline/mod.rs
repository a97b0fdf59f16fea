//! The processing pipeline: from a queued LE instance to a stored derived instance.
//!
//! Workers, under the [`Supervisor`], claim jobs from the [`LeaseQueue`] under a lease that they
//! renew while working. Decoding and preprocessing, and postprocessing and encoding, run on the
//! blocking pool; inference runs on one model thread that batches ([`inference`]). A failure is
//! a [`JobError`]: a transient one is retried with exponential backoff until the job's attempts
//! are spent, then the job is dead with its reason; an input that cannot be decoded is dead at
//! once. Before inference, the out-of-distribution guard ([`OodGuard`], `[inference] ood`)
//! scores the preprocessed LE image against the model's training inputs: one beyond the
//! threshold is synthesized with a warning, or refused (the job done, nothing derived, the
//! refusal its outcome). At shutdown a worker finishes its job within a grace period or
//! releases it. Derived UIDs are deterministic, so a job redone after a crash yields the same
//! instance, recorded once.

pub mod inference;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use tch::Tensor;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vcnode_models::model::RcModel;
use vcnode_models::ood::{OodScorer, OodVerdict};
use vcnode_models::preprocess::{plan, restore, to_model, Geometry, InputSpec};

use crate::config::OodAction;
use crate::derive::{self, DerivedKind, Synthesizer, SyntheticRc};
use crate::pixels::{self, WindowSource};
use crate::queue::{
    keep_leases, JobLease, Kind, LeaseQueue, NewInstance, QueueError, RetryPolicy, StageTimings, State,
};
use crate::store::{InstanceStore, StoreError};
use crate::supervisor::{Stage, Supervisor};
pub use inference::{Inference, InferenceError};

/// Where the derived files go under data_dir.
pub const DERIVED_DIR: &str = "derived";

/// An LE image through decoding and preprocessing, ready for the model.
pub struct PreparedSource {
    pub source: FileDicomObject<InMemDicomObject>,
    pub input: Tensor,
    pub geometry: Geometry,
    pub window_note: String,
    /// Set when the out-of-distribution guard flagged the image: the warning its derived
    /// instances carry.
    pub out_of_distribution: Option<String>,
}

/// The out-of-distribution guard of a node: the model's input profile and what to do with an
/// image beyond its threshold.
#[derive(Clone)]
pub struct OodGuard {
    pub scorer: Arc<OodScorer>,
    pub action: OodAction,
}

impl OodGuard {
    /// The guard `[inference] ood` asks for, when the model's manifest has a profile; a model
    /// without one runs unguarded, with a warning here, once.
    pub fn for_model(action: OodAction, model: &RcModel) -> anyhow::Result<Option<OodGuard>> {
        if action == OodAction::Off {
            return Ok(None);
        }
        let Some(profile) = model.manifest.input_profile.clone() else {
            warn!(
                model = %model.manifest.model_id(),
                "the model's manifest has no input profile: the out-of-distribution guard is off \
                 for it (`vcnode-lab calibrate` adds one)"
            );
            return Ok(None);
        };
        let scorer = OodScorer::new(profile)
            .context("the model's input profile (`vcnode-lab calibrate` writes a new one)")?;
        info!(
            action = action.as_str(),
            threshold = scorer.profile().threshold,
            images = scorer.profile().images,
            "out-of-distribution guard on"
        );
        Ok(Some(OodGuard {
            scorer: Arc::new(scorer),
            action,
        }))
    }

    /// Scores a prepared image; one this guard flags gets the warning its derived instances
    /// carry. Whether it is refused instead is [`OodGuard::refuses`].
    pub fn apply(&self, prepared: &mut PreparedSource, spec: &InputSpec) -> OodVerdict {
        let v = self.scorer.score(&prepared.input, &prepared.geometry, spec);
        if v.outside() && self.action == OodAction::Flag {
            prepared.out_of_distribution = Some(ood_warning(&v));
        }
        v
    }

    pub fn refuses(&self, v: &OodVerdict) -> bool {
        v.outside() && self.action == OodAction::Refuse
    }
}

/// The sentence a flagged image's derived instances carry.
pub fn ood_warning(v: &OodVerdict) -> String {
    format!(
        "WARNING: INPUT OUTSIDE THE MODEL'S TRAINING DATA - UNRELIABLE (out-of-distribution score {:.2} > threshold {:.2}).",
        v.score, v.threshold
    )
}

/// A refused job's outcome.
pub fn ood_refusal(v: &OodVerdict) -> String {
    format!(
        "refused: input outside the model's training distribution (score {:.2} > {:.2})",
        v.score, v.threshold
    )
}

/// Why a job failed, typed up to where the worker decides between retrying and `dead`
/// ([`JobError::is_permanent`]).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    // Permanent: the same input fails the same way every time.
    #[error("source instance row missing")]
    SourceMissing,
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot decode the image: {0}")]
    Undecodable(String),
    #[error("cannot build the derived instance: {0:#}")]
    Derive(anyhow::Error),
    // Transient: the node, not the input, is the problem; retried with backoff for minutes.
    #[error("job database: {0}")]
    Database(#[from] QueueError),
    #[error("model thread: {0}")]
    Inference(#[from] InferenceError),
    #[error("cannot store the derived instance: {0}")]
    Store(#[from] StoreError),
    #[error("data_dir is below its free-space watermark ({free_mb} MiB free, needs {watermark_mb} MiB)")]
    DiskFull { free_mb: u64, watermark_mb: u64 },
    #[error("worker task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl JobError {
    /// True when trying again cannot help: the job is dead at once.
    pub fn is_permanent(&self) -> bool {
        match self {
            JobError::SourceMissing
            | JobError::Unreadable { .. }
            | JobError::Undecodable(_)
            | JobError::Derive(_) => true,
            JobError::Database(_)
            | JobError::Inference(_)
            | JobError::Store(_)
            | JobError::DiskFull { .. }
            | JobError::Task(_) => false,
        }
    }
}

/// Decode and preprocess an LE file (blocking).
pub fn prepare_source(path: &Path, spec: &InputSpec) -> Result<PreparedSource, JobError> {
    let source = dicom_object::open_file(path).map_err(|e| JobError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let image = pixels::decode(&source).map_err(|e| JobError::Undecodable(e.to_string()))?;
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
        out_of_distribution: None,
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
            out_of_distribution: prepared.out_of_distribution.as_deref(),
        },
        synth,
        kind,
    )
}

/// The destinations for results of images from a calling AE title.
pub type Routes = Arc<dyn Fn(Option<&str>) -> Vec<String> + Send + Sync>;

/// Shared state of the workers.
pub struct Pipeline {
    pub queue: Arc<dyn LeaseQueue>,
    pub store: InstanceStore,
    pub inference: Inference,
    pub spec: InputSpec,
    pub synth: Synthesizer,
    pub lease: Duration,
    pub retry: RetryPolicy,
    /// At shutdown, how long a worker may finish its job before it releases the lease.
    pub shutdown_grace: Duration,
    /// Also make the attention-map series.
    pub attention_map: bool,
    /// Routes: the destinations for results of images from a calling AE title.
    pub routes: Routes,
    pub export_max_attempts: u32,
    /// Derived files are not written below this much free space (`storage.min_free_mb`), the
    /// watermark below which ingest refuses new instances.
    pub min_free_bytes: u64,
    /// Woken by ingest when a job is queued.
    pub wake: Arc<Notify>,
    /// The out-of-distribution guard, when on and the model has a profile.
    pub ood: Option<OodGuard>,
}

impl Pipeline {
    /// Starts `workers` claim loops under the supervisor, which replaces one that panics.
    pub fn start(self: Arc<Self>, supervisor: &mut Supervisor, workers: usize) {
        for w in 0..workers.max(1) {
            let p = self.clone();
            supervisor.spawn(format!("job worker {w}"), Stage::Work, move |stop| {
                let p = p.clone();
                // A new owner per incarnation: a replaced worker never renews its predecessor's lease.
                let owner = format!("{}-w{w}", uuid::Uuid::new_v4().simple());
                async move { p.worker(owner, stop).await }
            });
        }
    }

    async fn worker(&self, owner: String, stop: CancellationToken) {
        while !stop.is_cancelled() {
            // Not raced against `stop`: a claim dropped mid-commit would leave a lease behind.
            match self.queue.claim_job(&owner, self.lease, &self.retry).await {
                Ok(Some(lease)) => self.run_job(lease, &stop).await,
                Ok(None) => {
                    // Sleep until ingest queues a job, or poll for retries coming due.
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()) => {}
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot claim jobs");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn run_job(&self, lease: JobLease, stop: &CancellationToken) {
        let job = lease.job_id;
        // Renewed while working, so that the lease expires only if this process dies.
        let renewal = keep_leases(
            self.queue.clone(),
            Kind::Job,
            lease.owner.clone(),
            vec![job],
            self.lease,
        );
        let work = self.process(&lease);
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => Some(r),
            // Shutdown: finish within the grace period, or give the job back.
            _ = stop.cancelled() => tokio::time::timeout(self.shutdown_grace, &mut work).await.ok(),
        };
        drop(renewal);
        let release = match &result {
            None => true,
            // A transient failure during shutdown is the shutdown's doing (the model thread
            // stopping, say): not an attempt.
            Some(Err(e)) => stop.is_cancelled() && !e.is_permanent(),
            Some(Ok(())) => false,
        };
        if release {
            match self.queue.release(Kind::Job, &lease.owner, &[job]).await {
                Ok(_) => info!(job, "shutdown: job released, to be done after the restart"),
                Err(e) => warn!(job, error = %e, "shutdown: cannot release a job; its lease will expire"),
            }
            return;
        }
        if let Some(Err(e)) = result {
            let reason = e.to_string();
            let backoff = self.retry.backoff(lease.attempt);
            match self
                .queue
                .fail(Kind::Job, &lease.owner, job, &reason, e.is_permanent(), backoff)
                .await
            {
                Ok(state) => warn!(
                    job,
                    attempt = lease.attempt,
                    max_attempts = lease.max_attempts,
                    permanent = e.is_permanent(),
                    state = state.map(State::as_str).unwrap_or("lease lost"),
                    retry_in_s = backoff.as_secs(),
                    %reason,
                    "job failed"
                ),
                Err(e) => warn!(job, error = %e, "cannot record a job failure"),
            }
        }
    }

    async fn process(&self, lease: &JobLease) -> Result<(), JobError> {
        #[cfg(feature = "fault-hooks")]
        fault_hooks::abort_if_poison(lease);
        let t0 = Instant::now();
        let (rel, calling_ae) = self
            .queue
            .job_source(lease)
            .await?
            .ok_or(JobError::SourceMissing)?;
        let destinations = (self.routes)(calling_ae.as_deref());
        let path = self.store.root().join(rel);
        let spec = self.spec;
        let guard = self.ood.clone();
        let (prepared, verdict) = tokio::task::spawn_blocking(move || {
            let mut prepared = prepare_source(&path, &spec)?;
            let verdict = guard.map(|g| (g.apply(&mut prepared, &spec), g));
            Ok::<_, JobError>((prepared, verdict))
        })
        .await??;
        let t1 = Instant::now();
        match verdict {
            Some((v, guard)) if v.outside() => {
                crate::metrics::count_ood_input(guard.action);
                // Scores only: never patient data at info level.
                info!(
                    job = lease.job_id,
                    score = v.score,
                    threshold = v.threshold,
                    action = guard.action.as_str(),
                    "LE image outside the model's training distribution"
                );
                if guard.refuses(&v) {
                    return self.refuse(lease, &v, (t1 - t0).as_millis() as u64).await;
                }
            }
            Some((v, _)) => debug!(
                job = lease.job_id,
                score = v.score,
                "LE image within the training distribution"
            ),
            None => {}
        }
        let output = self
            .inference
            .synthesize(prepared.input.shallow_clone(), self.attention_map)
            .await?;
        let t2 = Instant::now();
        let free = self.store.free_bytes().map_err(|e| StoreError::Io {
            path: self.store.root().to_path_buf(),
            source: e,
        })?;
        if free < self.min_free_bytes {
            return Err(JobError::DiskFull {
                free_mb: free >> 20,
                watermark_mb: self.min_free_bytes >> 20,
            });
        }
        let (store, synth) = (self.store.clone(), self.synth.clone());
        let (derived, bytes, t3) = tokio::task::spawn_blocking(move || {
            let mut outputs = vec![(DerivedKind::SyntheticRc, output.image)];
            outputs.extend(output.attention.map(|a| (DerivedKind::AttentionMap, a)));
            let objects = outputs
                .iter()
                .map(|(kind, t)| derive_instance(&prepared, t, &spec, &synth, *kind))
                .collect::<anyhow::Result<Vec<_>>>()
                .map_err(JobError::Derive)?;
            let t3 = Instant::now();
            let mut rows = Vec::new();
            let mut total = 0;
            for obj in &objects {
                let derived = derived_record(obj).map_err(JobError::Derive)?;
                let mut bytes = Vec::new();
                obj.write_dataset_with_ts(
                    &mut bytes,
                    &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                )
                .map_err(|e| JobError::Derive(e.into()))?;
                let size = store.write_part10(Path::new(&derived.path), obj.meta(), &bytes)?;
                total += size;
                rows.push(NewInstance {
                    bytes: size as i64,
                    ..derived
                });
            }
            Ok::<_, JobError>((rows, total, t3))
        })
        .await??;
        let t4 = Instant::now();
        let stages = StageTimings {
            prepare_ms: (t1 - t0).as_millis() as u64,
            inference_ms: (t2 - t1).as_millis() as u64,
            postprocess_ms: (t3 - t2).as_millis() as u64,
            encode_ms: (t4 - t3).as_millis() as u64,
        };
        let recorded = self
            .queue
            .complete_with_derived(
                lease,
                &derived,
                &lease.source_uid,
                &destinations,
                self.export_max_attempts,
                &stages,
                None,
            )
            .await?;
        if recorded {
            metrics::histogram!(crate::metrics::INFERENCE).record((t2 - t1).as_secs_f64());
            metrics::histogram!(crate::metrics::JOB_LATENCY)
                .record(crate::metrics::seconds_since(lease.created_at));
        } else {
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
            prepare_ms = stages.prepare_ms,
            inference_ms = stages.inference_ms,
            postprocess_ms = stages.postprocess_ms,
            encode_ms = stages.encode_ms,
            total_ms = t0.elapsed().as_millis() as u64,
            "derived instance stored"
        );
        Ok(())
    }

    /// Ends a job whose input the guard refused: done, nothing derived, the refusal as its
    /// outcome (not a failure: trying again gives the same answer).
    async fn refuse(&self, lease: &JobLease, v: &OodVerdict, prepare_ms: u64) -> Result<(), JobError> {
        let stages = StageTimings {
            prepare_ms,
            ..Default::default()
        };
        let outcome = ood_refusal(v);
        let recorded = self
            .queue
            .complete_with_derived(lease, &[], &lease.source_uid, &[], 0, &stages, Some(&outcome))
            .await?;
        if !recorded {
            warn!(
                job = lease.job_id,
                "lease lost while processing; another worker owns the job"
            );
        }
        Ok(())
    }
}

/// The generator as `[inference]` configures it: the device resolved (an unusable CUDA request
/// is an error naming what to install), the weights loaded and checked against their manifest,
/// converted to the configured precision; on CUDA, warmed up with a full batch. None when
/// `model` is "" (processing off).
pub fn load_model(config: &crate::config::InferenceConfig) -> anyhow::Result<Option<RcModel>> {
    let Some(manifest) = config.model_manifest() else {
        return Ok(None);
    };
    let device =
        vcnode_models::device::resolve(config.device, config.torch_lib()).context("[inference] device")?;
    let mut model = RcModel::load(&manifest, device)
        .with_context(|| format!("[inference] model {}", manifest.display()))?;
    model.set_precision(config.precision);
    if device.is_cuda() {
        let t = Instant::now();
        model.warm_up(config.max_batch as i64);
        info!(
            ms = t.elapsed().as_millis() as u64,
            batch = config.max_batch,
            "generator warmed up"
        );
    }
    info!(
        model = %model.manifest.model_id(),
        manifest = %manifest.display(),
        device = ?device,
        kind = ?model.kind,
        "generator loaded"
    );
    Ok(Some(model))
}

/// Test-only faults, compiled with the `fault-hooks` feature (`cargo test` turns it on through
/// the crate's dev-dependency on itself; release builds never have it).
#[cfg(feature = "fault-hooks")]
mod fault_hooks {
    /// `VCNODE_FAULT_ABORT_ON_SOURCE=<SOP Instance UID>`: abort the whole process, as a crash in
    /// a codec or an out-of-memory kill would, when that instance's job is processed.
    pub fn abort_if_poison(lease: &crate::queue::JobLease) {
        if std::env::var("VCNODE_FAULT_ABORT_ON_SOURCE").is_ok_and(|uid| uid == lease.source_uid) {
            tracing::error!(
                job = lease.job_id,
                attempt = lease.attempt,
                "fault hook: aborting the process"
            );
            std::process::abort();
        }
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
        // From the data set just built, as ingest reads a received one: QIDO-RS shows the
        // derived series with its description, Synthetic Data and Conversion Type.
        attrs: crate::queue::IndexedAttributes::from_object(obj),
    })
}

/// `vcnode process`: the same pipeline, offline, on files, with the out-of-distribution guard
/// as `ood` says (a refused file is named on stderr and gets no output). Returns the written
/// paths.
pub fn process_files(
    files: &[PathBuf],
    out: &Path,
    model: &RcModel,
    synth: &Synthesizer,
    ood: OodAction,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let spec = model.manifest.input;
    let guard = OodGuard::for_model(ood, model)?;
    let mut written = Vec::new();
    for file in files {
        let mut prepared =
            prepare_source(file, &spec).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if let Some(g) = &guard {
            let v = g.apply(&mut prepared, &spec);
            if g.refuses(&v) {
                eprintln!("{}: {}", file.display(), ood_refusal(&v));
                continue;
            }
            if let Some(warning) = &prepared.out_of_distribution {
                eprintln!("{}: {warning}", file.display());
            }
        }
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
