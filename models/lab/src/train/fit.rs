//! Training of the four models with the paper's losses and optimizer: L1 for the U-Nets;
//! BCE-with-logits GAN loss + λ·L1 (λ = 100) with a PatchGAN for the cGANs; Adam, lr 2e-4,
//! β1 0.5. Checkpoints after every epoch; `resume` continues from the last one (weights and
//! epoch; Adam's moments restart).
//!
//! With validation pairs, the U-Nets end on the weights of the epoch with the lowest validation
//! L1, not the last epoch's: Adam with β1 = 0.5 occasionally spikes late in a run, and the
//! epoch count is a budget rather than a convergence criterion. The cGANs keep their last
//! weights, since L1 is only part of their objective.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

// What a training run records of itself lives with the manifest, which serving reads: serving
// must not depend on training.
pub use vcnode_models::manifest::{PatchSampling, SeedProbe};

use super::autocast::Bf16Autocast;
use vcnode_models::model::{load_safetensors, save_safetensors, ModelError, GENERATOR_PREFIX};
use vcnode_models::nets::{Generator, GeneratorConfig, ModelKind, PatchGan, StageNorm};
use vcnode_models::preprocess::InputSpec;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no training pairs")]
    NoData,
    #[error("training data has shape {found:?}; the model input is {expected:?}")]
    Shape { found: Vec<i64>, expected: Vec<i64> },
    #[error("patch size {size} must be a multiple of {multiple} and fit the {rows}x{cols} input")]
    PatchSize {
        size: i64,
        multiple: i64,
        rows: i64,
        cols: i64,
    },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error("bf16 autocast trains on CUDA only, not on {0:?}: use f32 there")]
    MixedPrecision(Device),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub generator: GeneratorConfig,
    pub input: InputSpec,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub beta1: f64,
    /// λ of the cGAN objective.
    pub lambda_l1: f64,
    /// PatchGAN width (64 in the paper).
    pub discriminator_base: i64,
    pub seed: i64,
    /// Train on crops instead of whole images (validation still uses whole images).
    #[serde(default)]
    pub patches: Option<PatchSampling>,
    /// The last epochs train with the batch norms in inference mode, on statistics taken from
    /// whole training images when the phase starts. Crops train with crop statistics, while
    /// inference runs whole images on running statistics: this phase lets the weights settle
    /// on exactly what inference will use. The weights kept from the phase are the average of
    /// its end-of-epoch weights (stochastic weight averaging), which evens out how much each
    /// epoch's last steps happened to move the background level and the lesions.
    #[serde(default)]
    pub frozen_norm_epochs: usize,
    /// Weights (safetensors of this architecture) to start from instead of a random
    /// initialization: fine-tuning.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Forward passes and losses under bf16 autocast (CUDA only; weights, optimizer and the
    /// precision-sensitive operations stay f32): the paper's configuration at about twice the
    /// speed of f32 on tensor-core GPUs.
    #[serde(default)]
    pub mixed_precision: bool,
}

/// An RC pixel counts as enhancing this far (normalized units) above the breast's median: above
/// the noise of flat unenhanced tissue.
const ENHANCEMENT_MARGIN: f64 = 0.05;
/// LE pixels at or below this (normalized) are air, outside the breast.
const AIR_LEVEL: f64 = 0.02;

/// How far each pixel of a target RC ([1, H, W]) rises above the breast's median, flattened;
/// 0 where it does not, or outside the breast (`le`). This is where the uptake is, found
/// without annotations.
fn enhancement(le: &Tensor, rc: &Tensor) -> Tensor {
    let rc = rc.flatten(0, -1);
    let breast = le.flatten(0, -1).gt(AIR_LEVEL);
    let inside = rc.masked_select(&breast);
    let median = if inside.numel() > 0 {
        f64::try_from(inside.median()).unwrap_or(0.0)
    } else {
        0.0
    };
    (rc - median - ENHANCEMENT_MARGIN).clamp_min(0.0) * breast
}

/// Draws crops for [`PatchSampling`].
struct PatchSampler {
    spec: PatchSampling,
    /// [N, H·W] enhancement of each target pixel (0 where flat); where crops are centred.
    weights: Tensor,
    /// [N] share of all enhancement in each image; None when no image enhances.
    images: Option<Tensor>,
    rows: i64,
    cols: i64,
}

impl PatchSampler {
    fn new(spec: PatchSampling, data: &PairTensors) -> PatchSampler {
        let size = data.le.size();
        let (n, rows, cols) = (size[0], size[2], size[3]);
        let weights: Vec<Tensor> = (0..n)
            .map(|i| enhancement(&data.le.get(i), &data.rc.get(i)))
            .collect();
        let weights = Tensor::stack(&weights, 0);
        let totals = weights.sum_dim_intlist(1, false, Kind::Float);
        let sum = f64::try_from(totals.sum(Kind::Float)).unwrap_or(0.0);
        PatchSampler {
            spec,
            weights,
            images: (sum > 0.0).then(|| totals / sum),
            rows,
            cols,
        }
    }

    fn uniform(upper: i64) -> i64 {
        i64::try_from(Tensor::randint(upper.max(1), [1], (Kind::Int64, Device::Cpu))).unwrap_or(0)
    }

    /// `batch` crops of (LE, RC), [batch, 1, size, size] each.
    fn draw(&self, data: &PairTensors, batch: i64) -> (Tensor, Tensor) {
        let s = self.spec.size;
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..batch {
            let coin = f64::try_from(Tensor::rand([1], (Kind::Float, Device::Cpu))).unwrap_or(1.0);
            let (i, top, left) = match &self.images {
                Some(images) if coin < self.spec.enhancement_share => {
                    let i = i64::try_from(images.multinomial(1, false)).unwrap_or(0);
                    let k = i64::try_from(self.weights.get(i).multinomial(1, false)).unwrap_or(0);
                    // Jitter, so the enhancement is not always in the middle of the crop.
                    let jitter = || Self::uniform(s / 2 + 1) - s / 4;
                    let top = (k / self.cols - s / 2 + jitter()).clamp(0, self.rows - s);
                    let left = (k % self.cols - s / 2 + jitter()).clamp(0, self.cols - s);
                    (i, top, left)
                }
                _ => (
                    Self::uniform(data.len()),
                    Self::uniform(self.rows - s + 1),
                    Self::uniform(self.cols - s + 1),
                ),
            };
            let crop = |t: &Tensor| t.get(i).narrow(1, top, s).narrow(2, left, s);
            xs.push(crop(&data.le));
            ys.push(crop(&data.rc));
        }
        (Tensor::stack(&xs, 0), Tensor::stack(&ys, 0))
    }
}

impl TrainConfig {
    /// The batch for `n` training pairs. Crops are drawn anew each step, so a patch batch may
    /// hold more crops than there are images.
    pub fn effective_batch(&self, n: i64) -> i64 {
        match self.patches {
            Some(_) => (self.batch as i64).max(1),
            None => (self.batch as i64).clamp(1, n.max(1)),
        }
    }

    /// Steps per epoch for `n` training pairs: an epoch sees as many pixels as the pairs hold,
    /// as whole images or as crops.
    pub fn steps_per_epoch(&self, n: i64) -> usize {
        let batch = self.effective_batch(n) as u64;
        let samples = match self.patches {
            Some(p) => ((n * self.input.rows * self.input.cols) as u64).div_ceil((p.size * p.size) as u64),
            None => n as u64,
        };
        samples.div_ceil(batch).max(1) as usize
    }

    /// The paper's defaults for a model kind at an input size.
    pub fn paper(kind: ModelKind, input: InputSpec) -> TrainConfig {
        TrainConfig {
            kind,
            generator: GeneratorConfig::paper(kind.uses_scpa()),
            input,
            epochs: 200,
            batch: 8,
            learning_rate: 2e-4,
            beta1: 0.5,
            lambda_l1: 100.0,
            discriminator_base: 64,
            seed: 0,
            patches: None,
            frozen_norm_epochs: 0,
            init: None,
            mixed_precision: false,
        }
    }
}

/// Paired, preprocessed tensors [N, 1, H, W] (f32, CPU): input LE and target RC.
pub struct PairTensors {
    pub le: Tensor,
    pub rc: Tensor,
}

impl PairTensors {
    pub fn len(&self) -> i64 {
        self.le.size()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the progress callback sees.
#[derive(Debug, Clone)]
pub enum Event {
    Step {
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        l1: f64,
    },
    Epoch(EpochStats),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean training L1 of the generator (normalized units).
    pub l1: f64,
    pub gan_g: Option<f64>,
    pub gan_d: Option<f64>,
    /// Mean L1 on the validation pairs, if any.
    pub val_l1: Option<f64>,
    /// Mean L1 on the validation pixels where the target RC enhances (see [`Validation`]).
    #[serde(default)]
    pub val_enhancement_l1: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    epochs_done: usize,
    steps: usize,
    history: Vec<EpochStats>,
    /// The epoch (0-based) whose weights are kept in `best.safetensors`, and its validation L1.
    #[serde(default)]
    best: Option<(usize, f64)>,
}

/// A finished (or resumed-and-finished) run.
pub struct Trained {
    pub vs: nn::VarStore,
    pub generator: Generator,
    pub history: Vec<EpochStats>,
    /// The epoch (0-based) whose weights these are, when chosen by validation L1.
    pub selected_epoch: Option<usize>,
    pub steps: usize,
    pub seconds: f64,
}

fn checkpoint_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("state.json"),
        dir.join("generator.safetensors"),
        dir.join("discriminator.safetensors"),
        dir.join("best.safetensors"),
        dir.join("average.safetensors"),
    )
}

/// Folds the weights of `from` into the running average held in `into`, as its `n`-th term.
fn fold_into_average(into: &nn::VarStore, from: &nn::VarStore, n: usize) {
    let from = from.variables();
    tch::no_grad(|| {
        for (name, mut avg) in into.variables() {
            let w = &from[&name];
            // The first term exactly, not avg + (w − avg), which rounds.
            let next = if n <= 1 {
                w.copy()
            } else {
                &avg + (w - &avg) / n as f64
            };
            avg.copy_(&next);
        }
    });
}

/// How close the generator comes to the targets of some pairs, in eval mode.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// Mean L1 over all pixels.
    pub l1: f64,
    /// Mean L1 over the pixels where the target RC enhances (about 1% of a breast; NaN when
    /// none does). The whole-image L1 barely sees them: a generator that draws only the flat
    /// background scores well on it while missing every lesion.
    pub enhancement_l1: f64,
}

impl Validation {
    /// Scores predictions ([N, 1, H, W], CPU) against the targets of `data`.
    pub fn of(pred: &Tensor, data: &PairTensors) -> Validation {
        let error = (pred - &data.rc).abs();
        let (mut enhancing, mut count) = (0.0, 0.0);
        for i in 0..data.len() {
            let mask = enhancement(&data.le.get(i), &data.rc.get(i)).gt(0.0);
            let on_mask = error.get(i).flatten(0, -1).masked_select(&mask);
            enhancing += f64::try_from(on_mask.sum(Kind::Double)).unwrap_or(f64::NAN);
            count += on_mask.numel() as f64;
        }
        Validation {
            l1: f64::try_from(error.mean(Kind::Double)).unwrap_or(f64::NAN),
            enhancement_l1: if count > 0.0 { enhancing / count } else { f64::NAN },
        }
    }
}

/// Scores the generator on `data`, in batches of `batch`.
pub fn validate(generator: &Generator, data: &PairTensors, device: Device, batch: i64) -> Validation {
    let n = data.len();
    let preds: Vec<Tensor> = tch::no_grad(|| {
        (0..n)
            .step_by(batch.max(1) as usize)
            .map(|i| {
                let x = data.le.narrow(0, i, batch.min(n - i)).to_device(device);
                generator.run(&x, false).image.to_device(Device::Cpu)
            })
            .collect()
    });
    Validation::of(&Tensor::cat(&preds, 0), data)
}

/// Whole training images that [`recalibrate_on_whole_images`] uses, spread evenly over the
/// set: enough for stable statistics, few enough to cost a fraction of an epoch.
const RECALIBRATION_IMAGES: i64 = 64;

/// Gives the batch norms the statistics of whole training images, which are what validation
/// and inference run on (see [`Generator::recalibrate_batch_norm`]).
fn recalibrate_on_whole_images(generator: &Generator, data: &PairTensors, device: Device, batch: i64) {
    let n = data.len();
    let take = n.min(RECALIBRATION_IMAGES);
    let idx = Tensor::from_slice(&(0..take).map(|i| i * n / take).collect::<Vec<i64>>());
    let images = data.le.index_select(0, &idx);
    let batch = batch.max(2);
    generator.recalibrate_batch_norm(
        (0..take)
            .step_by(batch as usize)
            .map(|i| images.narrow(0, i, batch.min(take - i)).to_device(device)),
    );
}

/// Trains on `data`, checkpointing into `checkpoint_dir`. With `resume`, continues a run whose
/// checkpoint is there (the configuration must match).
pub fn train(
    config: &TrainConfig,
    data: &PairTensors,
    validation: Option<&PairTensors>,
    device: Device,
    checkpoint_dir: &Path,
    resume: bool,
    progress: &mut dyn FnMut(Event),
) -> Result<Trained, TrainError> {
    if data.is_empty() {
        return Err(TrainError::NoData);
    }
    let expected = vec![1, config.input.rows, config.input.cols];
    if data.le.size()[1..] != expected[..] || data.rc.size() != data.le.size() {
        return Err(TrainError::Shape {
            found: data.le.size(),
            expected,
        });
    }
    if let Some(p) = &config.patches {
        let multiple = config.generator.size_multiple();
        if p.size <= 0 || p.size % multiple != 0 || p.size > config.input.rows || p.size > config.input.cols {
            return Err(TrainError::PatchSize {
                size: p.size,
                multiple,
                rows: config.input.rows,
                cols: config.input.cols,
            });
        }
    }
    if config.mixed_precision && !device.is_cuda() {
        return Err(TrainError::MixedPrecision(device));
    }
    // A scope of bf16 autocast around each forward pass, when asked for.
    let autocast = || config.mixed_precision.then(Bf16Autocast::enter);
    tch::manual_seed(config.seed);
    let sampler = config.patches.map(|p| PatchSampler::new(p, data));
    std::fs::create_dir_all(checkpoint_dir).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    let (state_path, gen_path, disc_path, best_path, avg_path) = checkpoint_paths(checkpoint_dir);

    let mut gvs = nn::VarStore::new(device);
    let generator = Generator::new(gvs.root() / GENERATOR_PREFIX, &config.generator);
    // The average of the weights at the end of each frozen-norm epoch (see TrainConfig). Only
    // built for such a phase: its initialization draws from the seeded stream, and runs without
    // one must draw the same crops as before the phase existed.
    let has_norms = config.generator.norm == StageNorm::Batch;
    let mut average = (has_norms && config.frozen_norm_epochs > 0).then(|| {
        let avs = nn::VarStore::new(device);
        let generator = Generator::new(avs.root() / GENERATOR_PREFIX, &config.generator);
        (avs, generator)
    });
    let mut dvs = nn::VarStore::new(device);
    let discriminator = config
        .kind
        .adversarial()
        .then(|| PatchGan::new(dvs.root() / "discriminator", 2, config.discriminator_base));

    if let Some(init) = &config.init {
        load_safetensors(&mut gvs, init, config.kind.name())?;
    }
    let mut state = CheckpointState {
        config: config.clone(),
        epochs_done: 0,
        steps: 0,
        history: Vec::new(),
        best: None,
    };
    if resume && state_path.exists() {
        let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let saved: CheckpointState =
            serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        if serde_json::to_value(&saved.config.generator).ok() != serde_json::to_value(&config.generator).ok()
            || saved.config.kind != config.kind
        {
            return Err(TrainError::Checkpoint(format!(
                "{} holds a {} run with another architecture",
                checkpoint_dir.display(),
                saved.config.kind.name()
            )));
        }
        load_safetensors(&mut gvs, &gen_path, config.kind.name())?;
        if discriminator.is_some() {
            load_safetensors(&mut dvs, &disc_path, "patchgan")?;
        }
        if let (Some((avs, _)), true) = (average.as_mut(), avg_path.exists()) {
            load_safetensors(avs, &avg_path, config.kind.name())?;
        }
        state.epochs_done = saved.epochs_done;
        state.steps = saved.steps;
        state.history = saved.history;
        state.best = saved.best.filter(|_| best_path.exists());
        // A new stream for the epochs to come, not a replay of the first epochs' crops.
        tch::manual_seed(config.seed.wrapping_add(state.epochs_done as i64));
    }
    let select_best = validation.is_some() && !config.kind.adversarial();

    let mut g_opt = nn::adam(config.beta1, 0.999, 0.0).build(&gvs, config.learning_rate)?;
    let mut d_opt = match &discriminator {
        Some(_) => Some(nn::adam(config.beta1, 0.999, 0.0).build(&dvs, config.learning_rate)?),
        None => None,
    };
    let n = data.len();
    let batch = config.effective_batch(n);
    let steps_per_epoch = config.steps_per_epoch(n);
    let started = Instant::now();
    let bce = |logits: &Tensor, real: bool| {
        let target = if real {
            logits.ones_like()
        } else {
            logits.zeros_like()
        };
        logits.binary_cross_entropy_with_logits::<Tensor>(&target, None, None, Reduction::Mean)
    };

    let frozen_from = config.epochs.saturating_sub(config.frozen_norm_epochs);
    for epoch in state.epochs_done..config.epochs {
        let t0 = Instant::now();
        // A run resumed inside the phase keeps the statistics its checkpoint holds.
        let frozen = has_norms && epoch >= frozen_from;
        if frozen && epoch == frozen_from {
            recalibrate_on_whole_images(&generator, data, device, batch);
        }
        // Whole images go through in a fresh order each epoch; crops are drawn per step instead.
        let order = sampler
            .is_none()
            .then(|| Tensor::randperm(n, (Kind::Int64, Device::Cpu)));
        let (mut l1_sum, mut g_sum, mut d_sum) = (0.0, 0.0, 0.0);
        for step in 0..steps_per_epoch {
            let (x, y) = match (&sampler, &order) {
                (Some(sampler), _) => sampler.draw(data, batch),
                (None, Some(order)) => {
                    let idx = order.narrow(0, step as i64 * batch, batch.min(n - step as i64 * batch));
                    (data.le.index_select(0, &idx), data.rc.index_select(0, &idx))
                }
                (None, None) => unreachable!("whole-image epochs always have an order"),
            };
            let (x, y) = (x.to_device(device), y.to_device(device));
            let (fake, l1) = {
                let _bf16 = autocast();
                let fake = generator.run_t(&x, !frozen, false).image;
                let l1 = fake.l1_loss(&y, Reduction::Mean);
                (fake, l1)
            };
            let l1_value = f64::try_from(&l1)?;
            match (&discriminator, &mut d_opt) {
                (Some(d), Some(d_opt)) => {
                    // Discriminator: real pairs → 1, generated pairs → 0.
                    let d_loss = {
                        let _bf16 = autocast();
                        let real = d.forward_t(&Tensor::cat(&[&x, &y], 1), true);
                        let fake_logits = d.forward_t(&Tensor::cat(&[&x, &fake.detach()], 1), true);
                        (bce(&real, true) + bce(&fake_logits, false)) * 0.5
                    };
                    d_opt.backward_step(&d_loss);
                    d_sum += f64::try_from(&d_loss)?;
                    // Generator: fool the discriminator and stay close to the target.
                    let gan = {
                        let _bf16 = autocast();
                        bce(&d.forward_t(&Tensor::cat(&[&x, &fake], 1), true), true)
                    };
                    g_sum += f64::try_from(&gan)?;
                    g_opt.backward_step(&(gan + &l1 * config.lambda_l1));
                }
                _ => g_opt.backward_step(&l1),
            }
            l1_sum += l1_value;
            state.steps += 1;
            progress(Event::Step {
                epoch,
                step,
                steps_per_epoch,
                l1: l1_value,
            });
        }
        let k = steps_per_epoch as f64;
        // In the frozen phase the average is the candidate: validated, checkpointed, kept.
        // With the statistics fixed, averaging weights is valid without recomputing them.
        let candidate = match (&average, frozen) {
            (Some((avs, averaged)), true) => {
                fold_into_average(avs, &gvs, epoch - frozen_from + 1);
                save_safetensors(avs, &avg_path, Kind::Float)?;
                (averaged, avs)
            }
            _ => (&generator, &gvs),
        };
        let val = validation.map(|v| validate(candidate.0, v, device, batch));
        let stats = EpochStats {
            epoch,
            l1: l1_sum / k,
            gan_g: discriminator.as_ref().map(|_| g_sum / k),
            gan_d: discriminator.as_ref().map(|_| d_sum / k),
            val_l1: val.map(|v| v.l1),
            val_enhancement_l1: val.map(|v| v.enhancement_l1),
            seconds: t0.elapsed().as_secs_f64(),
        };
        state.history.push(stats.clone());
        state.epochs_done = epoch + 1;
        // Checkpoint: weights first, then the state that points at them.
        save_safetensors(&gvs, &gen_path, Kind::Float)?;
        if let (true, Some(val)) = (select_best, stats.val_l1) {
            if val.is_finite() && state.best.is_none_or(|(_, b)| val < b) {
                save_safetensors(candidate.1, &best_path, Kind::Float)?;
                state.best = Some((epoch, val));
            }
        }
        if discriminator.is_some() {
            save_safetensors(&dvs, &disc_path, Kind::Float)?;
        }
        let text = serde_json::to_string_pretty(&state).expect("state serializes");
        std::fs::write(&state_path, text).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        progress(Event::Epoch(stats));
    }
    let selected_epoch = match state.best.filter(|_| select_best) {
        Some((epoch, _)) => {
            load_safetensors(&mut gvs, &best_path, config.kind.name())?;
            Some(epoch)
        }
        None => {
            if let (Some((avs, _)), true) = (&average, state.epochs_done > frozen_from) {
                gvs.copy(avs)?;
            }
            None
        }
    };
    Ok(Trained {
        vs: gvs,
        generator,
        history: state.history,
        selected_epoch,
        steps: state.steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_autocast_is_refused_on_the_cpu_with_a_clear_error() {
        let data = PairTensors {
            le: Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu)),
            rc: Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu)),
        };
        let input = InputSpec {
            rows: 32,
            cols: 32,
            normalization: vcnode_models::preprocess::Normalization::ZeroOne,
        };
        let config = TrainConfig {
            mixed_precision: true,
            ..TrainConfig::paper(ModelKind::Unet, input)
        };
        let dir = tempfile::tempdir().unwrap();
        let err = train(&config, &data, None, Device::Cpu, dir.path(), false, &mut |_| {})
            .err()
            .expect("bf16 autocast on the CPU must not train silently in f32");
        assert!(err.to_string().contains("CUDA only"), "{err}");
    }

    /// Flat images (LE 0.5, RC 0.4) where image `spot` has one enhancing square in its RC.
    fn one_spot(n: i64, spot: i64) -> PairTensors {
        let le = Tensor::full([n, 1, 64, 64], 0.5, (Kind::Float, Device::Cpu));
        let rc = Tensor::full([n, 1, 64, 64], 0.4, (Kind::Float, Device::Cpu));
        let _ = rc.get(spot).narrow(1, 40, 6).narrow(2, 50, 6).fill_(0.9);
        PairTensors { le, rc }
    }

    #[test]
    fn validation_singles_out_the_enhancing_pixels() {
        let data = one_spot(3, 1);
        // Everything right but the spot, drawn as flat background: the whole-image L1 hardly
        // notices (36 of 12288 pixels), the enhancement L1 is the whole miss.
        let flat = Tensor::full([3, 1, 64, 64], 0.4, (Kind::Float, Device::Cpu));
        let v = Validation::of(&flat, &data);
        assert!(v.l1 < 0.002, "{v:?}");
        assert!((v.enhancement_l1 - 0.5).abs() < 1e-5, "{v:?}");
        // Off everywhere else but right on the spot: the other way round.
        let off = &data.rc + data.rc.lt(0.5) * 0.1;
        let v = Validation::of(&off, &data);
        assert!(v.l1 > 0.09 && v.enhancement_l1 < 1e-6, "{v:?}");
        // Targets without enhancement have no such pixels to score.
        let still = PairTensors {
            le: data.le.shallow_clone(),
            rc: data.le.shallow_clone(),
        };
        assert!(Validation::of(&still.rc, &still).enhancement_l1.is_nan());
    }

    #[test]
    fn enhancement_centred_crops_hold_the_enhancement_and_uniform_ones_cover_the_rest() {
        tch::manual_seed(1);
        let data = one_spot(6, 4);
        let spec = |share| PatchSampling {
            size: 16,
            enhancement_share: share,
        };
        let (x, y) = PatchSampler::new(spec(1.0), &data).draw(&data, 40);
        assert_eq!(x.size(), vec![40, 1, 16, 16]);
        assert_eq!(y.size(), x.size());
        // Every crop contains at least part of the spot (the jitter moves it off-centre).
        let peaks = y.amax([1, 2, 3], false);
        assert!(bool::try_from(peaks.gt(0.8).all()).unwrap(), "{peaks}");
        // Uniform crops mostly miss a spot that covers under 1% of the data.
        let (_, y) = PatchSampler::new(spec(0.0), &data).draw(&data, 40);
        let hits = i64::try_from(y.amax([1, 2, 3], false).gt(0.8).sum(Kind::Int64)).unwrap();
        assert!(hits < 10, "{hits} of 40 uniform crops hit the spot");
        // Data without enhancement falls back to uniform crops instead of failing.
        let flat = PairTensors {
            le: data.le.shallow_clone(),
            rc: data.le.shallow_clone(),
        };
        let (x, _) = PatchSampler::new(spec(1.0), &flat).draw(&flat, 3);
        assert_eq!(x.size(), vec![3, 1, 16, 16]);
    }
}
