//! `vcnode-lab train`: preprocess the pairs, train, write weights and their manifest. The training loop itself is [`fit`].

pub mod autocast;
pub mod fit;

use std::path::{Path, PathBuf};

use anyhow::Context;
use fit::{train, Event, PatchSampling, SeedProbe, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use tch::Kind;
use vcnode_models::manifest::{
    sha256_file, FineTunedFrom, Manifest, TrainingRecord, WeightsFormat, WeightsRef, MANIFEST_FORMAT,
};
use vcnode_models::model::save_safetensors;
use vcnode_models::nets::{GeneratorConfig, ModelKind};
use vcnode_models::preprocess::{InputSpec, Normalization};
use vcnode_models::DeviceRequest;

use super::dataset::{discover, prepare_all, stack};
use super::eval::score_pairs;

/// `vcnode-lab train` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// scpa-unet, scpa-cgan, unet or pix2pix.
    #[arg(long)]
    pub model: ModelKind,
    /// pairs.csv (columns le,rc[,rois]), a folder of *_LE.dcm/*_RC.dcm pairs, or a CDD-CESM folder.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// The configuration the other flags start from; each flag given overrides its value.
    #[arg(long, value_enum, default_value_t = Preset::Paper)]
    pub preset: Preset,
    /// Epochs (paper: 200).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images (or crops) per step (paper: 8).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long = "lr", default_value_t = 2e-4)]
    pub learning_rate: f64,
    /// Generator widths per U-Net level, e.g. 16,32,64,128 (paper: 32,64,128,256,256).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<i64>>,
    /// Model input rows (paper: 640).
    #[arg(long)]
    pub rows: Option<i64>,
    /// Model input columns (paper: 512).
    #[arg(long)]
    pub cols: Option<i64>,
    /// auto: bf16 autocast on CUDA, f32 on CPU; bf16 needs CUDA.
    #[arg(long, value_enum, default_value_t = TrainPrecision::Auto)]
    pub precision: TrainPrecision,
    /// Share of the pairs held out for validation (the last ones, so patients do not mix
    /// when the source lists them patient by patient).
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    /// Continue from the checkpoint in OUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Restarts: train each of these seeds for --probe-epochs, then continue only the one
    /// closest to the target on the validation pixels that enhance. Replaces --seed.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub seeds: Option<Vec<i64>>,
    /// With --seeds: epochs each seed trains before the choice.
    #[arg(long, default_value_t = 5, requires = "seeds")]
    pub probe_epochs: usize,
    /// Train on SIZE×SIZE crops instead of whole images (validation stays on whole images);
    /// 0: whole images.
    #[arg(long, value_name = "SIZE")]
    pub patch: Option<i64>,
    /// With crops: share of the crops centred on what the target RC enhances (no lesion
    /// annotations needed); the others are placed uniformly.
    #[arg(long, default_value_t = 0.8)]
    pub enhancement_share: f64,
    /// Start from the weights of this manifest (same architecture) instead of a random
    /// initialization: fine-tuning, e.g. the shipped model on a site's own pairs.
    #[arg(long, value_name = "MANIFEST", conflicts_with = "seeds")]
    pub init: Option<PathBuf>,
    /// Train the last K epochs with the batch norms frozen on statistics of whole training
    /// images, the way inference runs (useful after --patch training).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub frozen_norm_epochs: usize,
    /// Store the weights in half precision (halves the file).
    #[arg(long)]
    pub half: bool,
    /// How the manifest names the training data.
    #[arg(long)]
    pub data_label: Option<String>,
    /// A note for the manifest (e.g. why a smaller configuration was trained).
    #[arg(long)]
    pub note: Option<String>,
}

/// A named training configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The paper's: whole 640×512 images, widths 32-64-128-256-256, batch 8, 200 epochs (Adam
    /// lr 2e-4 β1 0.5; L1 for the U-Nets, cGAN + 100·L1 for the GANs). Sized for a GPU.
    Paper,
    /// What two CPU cores train in one to two hours per model (models/weights/train.sh):
    /// 512×384 input, widths 8-16-32-64-64, 96×96 crops, batch 16, 32 epochs, PatchGAN
    /// width 16.
    Cpu,
}

/// The values a [`Preset`] gives the flags left out.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetValues {
    pub rows: i64,
    pub cols: i64,
    pub channels: Vec<i64>,
    pub batch: usize,
    pub epochs: usize,
    /// Crop side; `None`: whole images.
    pub patch: Option<i64>,
    /// PatchGAN width of the cGANs (the paper's 64; on a CPU it would cost several times the
    /// generator's step).
    pub discriminator_base: i64,
}

impl Preset {
    pub fn values(self, scpa: bool) -> PresetValues {
        match self {
            Preset::Paper => PresetValues {
                rows: 640,
                cols: 512,
                channels: GeneratorConfig::paper(scpa).channels,
                batch: 8,
                epochs: 200,
                patch: None,
                discriminator_base: 64,
            },
            Preset::Cpu => PresetValues {
                rows: 512,
                cols: 384,
                channels: vec![8, 16, 32, 64, 64],
                batch: 16,
                epochs: 32,
                patch: Some(96),
                discriminator_base: 16,
            },
        }
    }
}

/// The arithmetic of training's forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainPrecision {
    /// bf16 autocast on CUDA, f32 elsewhere.
    Auto,
    F32,
    /// bf16 autocast (CUDA only).
    Bf16,
}

impl TrainArgs {
    /// The preset's values with the flags given on top.
    pub fn resolved(&self) -> PresetValues {
        let p = self.preset.values(self.model.uses_scpa());
        PresetValues {
            rows: self.rows.unwrap_or(p.rows),
            cols: self.cols.unwrap_or(p.cols),
            channels: self.channels.clone().unwrap_or(p.channels),
            batch: self.batch.unwrap_or(p.batch),
            epochs: self.epochs.unwrap_or(p.epochs),
            patch: match self.patch {
                Some(0) => None,
                Some(size) => Some(size),
                None => p.patch,
            },
            discriminator_base: p.discriminator_base,
        }
    }
}

/// Trains and writes `<out>/<model>.safetensors` and `<out>/<model>.json`; returns the
/// manifest's path.
pub fn run(args: &TrainArgs) -> anyhow::Result<PathBuf> {
    let device = vcnode_models::device::resolve(args.device, None)?;
    let values = args.resolved();
    let mixed_precision = match args.precision {
        TrainPrecision::Auto => device.is_cuda(),
        TrainPrecision::F32 => false,
        TrainPrecision::Bf16 => true,
    };
    let input = InputSpec {
        rows: values.rows,
        cols: values.cols,
        normalization: Normalization::ZeroOne,
    };
    let init = match &args.init {
        Some(path) => {
            let manifest = Manifest::load(path)?;
            let weights = manifest.verify(path)?;
            anyhow::ensure!(
                manifest.weights.format == WeightsFormat::Safetensors,
                "--init {} holds TorchScript weights; fine-tuning needs safetensors",
                path.display()
            );
            Some((manifest, weights))
        }
        None => None,
    };
    let mut generator = match &init {
        Some((m, _)) => m.generator.clone(),
        None => GeneratorConfig::paper(args.model.uses_scpa()),
    };
    // The preset's widths apply to a fresh generator; --init keeps its own unless told.
    if let Some(ch) = args
        .channels
        .as_ref()
        .or(init.is_none().then_some(&values.channels))
    {
        anyhow::ensure!(
            init.is_none() || *ch == generator.channels,
            "--channels {ch:?} differ from the --init weights' {:?}",
            generator.channels
        );
        generator.channels = ch.clone();
    }
    if let Some((m, _)) = &init {
        anyhow::ensure!(
            generator.scpa == args.model.uses_scpa(),
            "--init holds a {} generator, which a {} cannot start from",
            m.model.name(),
            args.model.name()
        );
    }
    let m = generator.size_multiple();
    anyhow::ensure!(
        values.rows % m == 0 && values.cols % m == 0,
        "input {}x{} must be a multiple of {m} for {} levels",
        values.rows,
        values.cols,
        generator.channels.len()
    );
    let config = TrainConfig {
        generator,
        epochs: values.epochs,
        batch: values.batch,
        learning_rate: args.learning_rate,
        seed: args.seed,
        patches: values.patch.map(|size| PatchSampling {
            size,
            enhancement_share: args.enhancement_share,
        }),
        frozen_norm_epochs: args.frozen_norm_epochs,
        init: init.as_ref().map(|(_, weights)| weights.clone()),
        mixed_precision,
        discriminator_base: values.discriminator_base,
        ..TrainConfig::paper(args.model, input)
    };

    let pairs = discover(&args.data)?;
    let n_val = ((pairs.len() as f64) * args.validation).round() as usize;
    let n_train = pairs.len() - n_val.min(pairs.len() - 1);
    eprintln!(
        "preprocessing {} pairs ({} for training, {} held out) …",
        pairs.len(),
        n_train,
        pairs.len() - n_train
    );
    let prepared = prepare_all(&pairs, &input)?;
    let (train_pairs, val_pairs) = prepared.split_at(n_train);
    let train_set = stack(train_pairs);
    let val_set = (!val_pairs.is_empty()).then(|| stack(val_pairs));

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let checkpoints = args.out.join("checkpoints").join(args.model.name());
    let seeds = args.seeds.clone().unwrap_or_else(|| vec![args.seed]);
    anyhow::ensure!(!seeds.is_empty(), "--seeds lists no seed");
    let probing = seeds.len() > 1;
    anyhow::ensure!(
        !probing || val_set.is_some(),
        "--seeds picks a seed by validation: --validation must hold out some pairs"
    );
    let probe_epochs = args.probe_epochs.clamp(1, config.epochs);
    let steps_per_epoch = config.steps_per_epoch(train_set.len()) as u64;
    let total_epochs = if probing {
        (seeds.len() - 1) * probe_epochs + config.epochs
    } else {
        config.epochs
    };
    let bar = ProgressBar::new(total_epochs as u64 * steps_per_epoch);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} steps, ETA {eta} {msg}")
            .expect("a valid template"),
    );
    // Epochs of earlier runs (probes), so the bar keeps counting across them.
    let epochs_before = std::cell::Cell::new(0u64);
    let label = std::cell::RefCell::new(String::new());
    let mut progress = |e: Event| match e {
        Event::Step { epoch, l1, .. } => {
            bar.inc(1);
            bar.set_message(format!("{}epoch {} L1 {l1:.4}", label.borrow(), epoch + 1));
        }
        Event::Epoch(s) => {
            // A resumed run starts past the epochs already done.
            bar.set_position((epochs_before.get() + s.epoch as u64 + 1) * steps_per_epoch);
            let gan = s
                .gan_d
                .map(|d| format!(", D {d:.3}, G {:.3}", s.gan_g.unwrap_or(0.0)));
            let val = s.val_l1.map(|v| {
                format!(
                    ", validation L1 {v:.4} (enhancing pixels {:.4})",
                    s.val_enhancement_l1.unwrap_or(f64::NAN)
                )
            });
            let line = format!(
                "{}epoch {:>3}: L1 {:.4}{}{} ({:.1} s)",
                label.borrow(),
                s.epoch + 1,
                s.l1,
                gan.unwrap_or_default(),
                val.unwrap_or_default(),
                s.seconds
            );
            // Without a terminal the bar is hidden; the epoch lines still belong in the log.
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    };

    // Restarts: a small generator may settle on the flat background and never start on the
    // lesions, depending only on its initialization (models/weights/train.sh). Each seed trains
    // a few epochs; the one closest on the enhancing validation pixels goes on.
    let mut seed_probes = Vec::new();
    let mut probe_seconds = 0.0;
    let seed = if probing {
        for (i, &seed) in seeds.iter().enumerate() {
            epochs_before.set((i * probe_epochs) as u64);
            let probe = TrainConfig {
                seed,
                epochs: probe_epochs,
                ..config.clone()
            };
            *label.borrow_mut() = format!("seed {seed} probe: ");
            let run = train(
                &probe,
                &train_set,
                val_set.as_ref(),
                device,
                &checkpoints.join(format!("seed-{seed}")),
                args.resume,
                &mut progress,
            )?;
            probe_seconds += run.seconds;
            seed_probes.push(SeedProbe {
                seed,
                epochs: probe_epochs,
                // The probe's last epoch, also when a resumed checkpoint holds more.
                val_enhancement_l1: run
                    .history
                    .get(probe_epochs - 1)
                    .and_then(|s| s.val_enhancement_l1)
                    .unwrap_or(f64::NAN),
            });
        }
        let best = seed_probes
            .iter()
            .min_by(|a, b| a.val_enhancement_l1.total_cmp(&b.val_enhancement_l1))
            .expect("at least two probes");
        eprintln!(
            "continuing seed {} (validation L1 on enhancing pixels {:.4} after {probe_epochs} epochs)",
            best.seed, best.val_enhancement_l1
        );
        // The winner's own probe epochs count once.
        epochs_before.set(((seeds.len() - 1) * probe_epochs) as u64);
        best.seed
    } else {
        args.seed
    };
    let config = TrainConfig { seed, ..config };
    label.borrow_mut().clear();
    let trained = train(
        &config,
        &train_set,
        val_set.as_ref(),
        device,
        &if probing {
            checkpoints.join(format!("seed-{seed}"))
        } else {
            checkpoints
        },
        // The winner continues from its probe.
        args.resume || probing,
        &mut progress,
    )?;
    bar.finish_and_clear();
    if let Some(epoch) = trained.selected_epoch {
        tracing::info!(
            epoch = epoch + 1,
            "keeping the weights of the epoch with the lowest validation L1"
        );
    }

    let file = format!("{}.safetensors", args.model.name());
    let weights = args.out.join(&file);
    let kind = if args.half { Kind::Half } else { Kind::Float };
    save_safetensors(&trained.vs, &weights, kind)?;
    let parameters = trained
        .vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum();
    let metrics = match &val_set {
        Some(_) => {
            let scored = score_pairs(val_pairs, |x| {
                tch::no_grad(|| trained.generator.run(&x.to_device(device), false).image)
            })?;
            // Validation chose the epoch (and the seed): development data, labelled so.
            let mut validation = scored.summary_json();
            validation["role"] = super::eval::Role::Development.name().into();
            validation["patients"] = patients_of(&pairs[n_train..]).into();
            serde_json::json!({ "validation": validation })
        }
        None => serde_json::Value::Null,
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        model: args.model,
        generator: config.generator.clone(),
        input,
        weights: WeightsRef {
            file,
            format: WeightsFormat::Safetensors,
            dtype: if args.half { "f16" } else { "f32" }.into(),
            sha256: sha256_file(&weights)?,
            parameters,
        },
        training: Some(TrainingRecord {
            data: args
                .data_label
                .clone()
                .unwrap_or_else(|| args.data.display().to_string()),
            data_path: Some(absolute(&args.data)),
            patients: patients_of(&pairs[..n_train]),
            validation_patients: patients_of(&pairs[n_train..]),
            pairs: n_train,
            epochs: config.epochs,
            steps: trained.steps,
            batch: config.batch,
            learning_rate: config.learning_rate,
            beta1: config.beta1,
            lambda_l1: args.model.adversarial().then_some(config.lambda_l1),
            discriminator_base: args.model.adversarial().then_some(config.discriminator_base),
            device: format!("{:?}", device),
            precision: Some(if mixed_precision { "bf16 autocast" } else { "f32" }.into()),
            // All training this run took, the probes of other seeds included.
            seconds: probe_seconds + trained.seconds,
            final_l1: trained.history.last().map(|s| s.l1).unwrap_or(f64::NAN),
            selected_epoch: trained.selected_epoch.map(|e| e + 1),
            patches: config.patches,
            seed: Some(config.seed),
            seed_probes,
            note: args.note.clone().unwrap_or_default(),
            frozen_norm_epochs: config.frozen_norm_epochs.min(config.epochs),
            fine_tuned_from: init.map(|(m, _)| FineTunedFrom {
                model_id: m.model_id(),
                sha256: m.weights.sha256.clone(),
                training: m.training.map(Box::new),
            }),
        }),
        metrics,
        created_by: format!("vcnode {}", env!("CARGO_PKG_VERSION")),
        // The inputs the weights trained on, for the node's out-of-distribution guard; a set
        // too small for one leaves the weights unguarded rather than the training lost.
        input_profile: match super::calibrate::input_profile(train_pairs, &input, &absolute(&args.data)) {
            Ok(profile) => Some(profile),
            Err(e) => {
                eprintln!("no out-of-distribution profile in the manifest: {e:#}");
                None
            }
        },
    };
    let path = manifest_path(&args.out, args.model);
    manifest.save(&path)?;
    Ok(path)
}

/// The distinct patients of `pairs`, in order (those without a known patient left out).
fn patients_of(pairs: &[super::dataset::PairPaths]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in pairs.iter().filter_map(|p| p.patient.as_ref()) {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// `path` made absolute (and canonical where it exists), as a string: how manifests and
/// evaluations name a data source so that they can be compared.
pub fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

pub fn manifest_path(dir: &Path, model: ModelKind) -> PathBuf {
    dir.join(format!("{}.json", model.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn parse(extra: &[&str]) -> TrainArgs {
        let mut argv = vec!["train", "--model", "scpa-unet", "--data", "d.csv", "--out", "w"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().train
    }

    #[test]
    fn the_paper_preset_is_the_papers_configuration_and_flags_override_a_preset() {
        let paper = parse(&[]).resolved();
        assert_eq!(
            paper,
            PresetValues {
                rows: 640,
                cols: 512,
                channels: vec![32, 64, 128, 256, 256],
                batch: 8,
                epochs: 200,
                patch: None,
                discriminator_base: 64,
            }
        );
        assert_eq!(parse(&["--preset", "paper"]).resolved(), paper);
        let args = parse(&["--preset", "cpu", "--epochs", "3", "--patch", "0"]);
        let cpu = args.resolved();
        assert_eq!((cpu.rows, cpu.cols, cpu.batch, cpu.epochs), (512, 384, 16, 3));
        assert_eq!(cpu.channels, vec![8, 16, 32, 64, 64]);
        assert_eq!(cpu.patch, None, "--patch 0 asks for whole images");
        assert_eq!(parse(&["--preset", "cpu"]).resolved().patch, Some(96));
        assert_eq!(args.precision, TrainPrecision::Auto);
    }
}
