//! The `vcnode` command line: `serve`, `doctor`, `jobs`, and developer tools.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use vcnode::config::Config;
use vcnode::fixture::{mammogram, MammogramSpec};
use vcnode::queue::Queue;

#[derive(Debug, Parser)]
#[command(
    name = "vcnode",
    version,
    about = "DICOM node for AI-synthesized CESM recombined images"
)]
struct Cli {
    /// Configuration file (only the keys that differ from the embedded defaults are needed).
    #[arg(long, global = true, env = "VCNODE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node: the DIMSE storage SCP and the job queue.
    Serve,
    /// Print the torch version, whether CUDA is usable and the device inference would use.
    Doctor,
    /// List jobs and their states.
    Jobs {
        /// Only jobs in this state (queued, running, done, failed, dead).
        #[arg(long)]
        state: Option<String>,
    },
    /// Write a CESM phantom data set: paired LE and RC DICOM files, lesion boxes, pairs.csv.
    Phantom {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 4)]
        patients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 3328)]
        rows: usize,
        #[arg(long, default_value_t = 2560)]
        columns: usize,
        /// Lesions per breast instead of the usual 0 to 3, e.g. for a lesion-enriched training
        /// set (fewer are placed where a breast has no room).
        #[arg(long)]
        lesions: Option<usize>,
    },
    /// Train a generator on paired LE/RC data; writes weights and their manifest.
    Train(vcnode::research::train::TrainArgs),
    /// Evaluate a model (and baselines) on paired data: metrics, paired tests, report.
    Eval(vcnode::research::eval::EvalArgs),
    /// Check the configured destinations (C-ECHO, or a QIDO-RS request).
    Destinations {
        #[command(subcommand)]
        action: DestinationsAction,
    },
    /// Run the pipeline offline: LE files in, derived RC instances out.
    Process {
        /// LE DICOM files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write synthetic mammograms for tests and benchmarks.
    #[command(hide = true)]
    Fixture {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        #[arg(long, default_value_t = 512)]
        rows: u16,
        #[arg(long, default_value_t = 416)]
        columns: u16,
        #[arg(long, default_value = vcnode_scp::MG_FOR_PRESENTATION)]
        sop_class: String,
        #[arg(long, default_value = "ORIGINAL\\PRIMARY\\POST_CONTRAST\\\\LOW_ENERGY")]
        image_type: String,
    },
}

#[derive(Debug, Subcommand)]
enum DestinationsAction {
    /// C-ECHO each DIMSE destination, query each DICOMweb one.
    Check,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VCNODE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(vcnode::node::serve(config))
        }
        Command::Doctor => doctor(&load(cli.config.as_deref())?),
        Command::Jobs { state } => {
            let config = load(cli.config.as_deref())?;
            runtime()?.block_on(jobs(&config, state.as_deref()))
        }
        Command::Phantom {
            out,
            patients,
            seed,
            rows,
            columns,
            lesions,
        } => {
            let n = vcnode::phantom::write_dataset(
                &out,
                &vcnode::phantom::PhantomDatasetSpec {
                    patients,
                    seed,
                    rows,
                    cols: columns,
                    lesions,
                },
            )?;
            println!(
                "{n} LE/RC pairs written; list: {}",
                out.join("pairs.csv").display()
            );
            Ok(())
        }
        Command::Train(args) => {
            let manifest = vcnode::research::train::run(&args)?;
            println!("weights and manifest: {}", manifest.display());
            Ok(())
        }
        Command::Eval(args) => {
            let report = vcnode::research::eval::run(&args)?;
            println!("report: {}", report.display());
            Ok(())
        }
        Command::Destinations {
            action: DestinationsAction::Check,
        } => {
            let config = load(cli.config.as_deref())?;
            anyhow::ensure!(!config.destinations.is_empty(), "no [[destinations]] configured");
            let results = runtime()?.block_on(vcnode::export::check(&config));
            let mut failed = 0;
            for (name, r) in &results {
                match r {
                    Ok(msg) => println!("{name}: ok — {msg}"),
                    Err(e) => {
                        failed += 1;
                        println!("{name}: FAILED — {e}");
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} destination(s) failed the check");
            Ok(())
        }
        Command::Process { files, out } => {
            let config = load(cli.config.as_deref())?;
            let manifest = config
                .inference
                .model_manifest()
                .context("[inference] model is empty")?;
            let device = vcnode_models::device::resolve(config.inference.device)?;
            let model = vcnode_models::model::RcModel::load(&manifest, device)?;
            let synth = vcnode::derive::Synthesizer {
                model_id: model.manifest.model_id(),
                weights_sha256: model.manifest.weights.sha256.clone(),
                burn_in_label: config.inference.burn_in_label,
            };
            for path in vcnode::pipeline::process_files(&files, &out, &model, &synth)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Fixture {
            out,
            count,
            first_seed,
            rows,
            columns,
            sop_class,
            image_type,
        } => {
            std::fs::create_dir_all(&out)?;
            for seed in first_seed..first_seed + count {
                let spec = MammogramSpec {
                    rows,
                    columns,
                    sop_class_uid: sop_class.clone(),
                    image_type: image_type.clone(),
                    ..MammogramSpec::low_energy(seed)
                };
                let path = out.join(format!("mg-{seed:05}.dcm"));
                mammogram(&spec)
                    .write_to_file(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn doctor(config: &Config) -> anyhow::Result<()> {
    let report = vcnode_models::device::inspect(config.inference.device);
    println!("vcnode {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch: {}",
        if report.libtorch_version.is_empty() {
            "unknown"
        } else {
            report.libtorch_version
        }
    );
    match &report.cuda_library {
        Ok(()) => println!("libtorch_cuda.so: loaded"),
        Err(e) => println!("libtorch_cuda.so: {e}"),
    }
    println!(
        "CUDA usable: {} ({} device(s), cuDNN {})",
        if report.cuda_device_count > 0 { "yes" } else { "no" },
        report.cuda_device_count,
        if report.cudnn { "yes" } else { "no" }
    );
    println!("configured device: {}", report.requested);
    match &report.resolved {
        Ok(d) => println!(
            "inference device: {d:?}{}",
            report
                .fallback_note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        Err(e) => println!("inference device: none: {e}"),
    }
    println!(
        "accepted transfer syntaxes: {}",
        vcnode::node::decodable_transfer_syntaxes().join(" ")
    );
    report.resolved.map(|_| ()).map_err(|e| anyhow::anyhow!(e))
}

async fn jobs(config: &Config, state: Option<&str>) -> anyhow::Result<()> {
    let db = config.node.data_dir.join(vcnode::queue::DB_FILE);
    anyhow::ensure!(
        db.exists(),
        "no job database at {} (has the node run with this data_dir?)",
        db.display()
    );
    let queue = Queue::open(&config.node.data_dir).await?;
    let jobs = queue.list_jobs(state).await?;
    println!(
        "{:>6}  {:<8}  {:>8}  {:<64}  LAST ERROR",
        "JOB", "STATE", "ATTEMPTS", "SOURCE INSTANCE"
    );
    for j in &jobs {
        println!(
            "{:>6}  {:<8}  {:>8}  {:<64}  {}",
            j.id,
            j.state,
            format!("{}/{}", j.attempts, j.max_attempts),
            j.source_uid,
            j.last_error.as_deref().unwrap_or("")
        );
    }
    let exports = queue.list_exports().await?;
    if !exports.is_empty() {
        println!();
        println!(
            "{:>6}  {:<8}  {:>8}  {:<12}  {:<64}  LAST ERROR",
            "EXPORT", "STATE", "ATTEMPTS", "DESTINATION", "INSTANCE"
        );
        for x in &exports {
            println!(
                "{:>6}  {:<8}  {:>8}  {:<12}  {:<64}  {}",
                x.id,
                x.state,
                format!("{}/{}", x.attempts, x.max_attempts),
                x.destination,
                x.instance_uid,
                x.last_error.as_deref().unwrap_or("")
            );
        }
    }
    let counts: Vec<String> = queue
        .job_counts()
        .await?
        .into_iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!(
        "{} job(s){}{}",
        jobs.len(),
        if counts.is_empty() { "" } else { "; " },
        counts.join(", ")
    );
    Ok(())
}
