//! The `vcnode-lab` command line: write phantom data sets, train generators, evaluate them.
//! The node (`vcnode`) serves what this produces: weights with their manifest.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vcnode_lab::phantom::{write_dataset, PhantomDatasetSpec};

#[derive(Debug, Parser)]
#[command(
    name = "vcnode-lab",
    version,
    about = "The research lab of vcnode: CESM phantom, training and evaluation of the generators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Train(vcnode_lab::train::TrainArgs),
    /// Evaluate a model (and baselines) on paired data: metrics, paired tests, report.
    Eval(vcnode_lab::eval::EvalArgs),
    /// Give a model's manifest the out-of-distribution guard's profile of its training inputs
    /// (weights unchanged), e.g. for weights trained before the guard.
    Calibrate(vcnode_lab::calibrate::CalibrateArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VCNODE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Phantom {
            out,
            patients,
            seed,
            rows,
            columns,
            lesions,
        } => {
            let spec = PhantomDatasetSpec {
                patients,
                seed,
                rows,
                cols: columns,
                lesions,
            };
            let n = write_dataset(&out, &spec)?;
            println!(
                "{n} LE/RC pairs written; list: {}",
                out.join("pairs.csv").display()
            );
        }
        Command::Train(args) => {
            let manifest = vcnode_lab::train::run(&args)?;
            println!("weights and manifest: {}", manifest.display());
        }
        Command::Eval(args) => {
            let report = vcnode_lab::eval::run(&args)?;
            println!("report: {}", report.display());
        }
        Command::Calibrate(args) => {
            let manifest = vcnode_lab::calibrate::run(&args)?;
            println!("manifest with its input profile: {}", manifest.display());
        }
    }
    Ok(())
}
