//! `vcnode-fuzz`: runs each fuzz target in a child process of its own, so that a target that
//! kills its process (a stack overflow aborts) is reported with the input that did it.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use vcnode_fuzz::engine::{self, Budget, Options};
use vcnode_fuzz::targets::NAMES;

#[derive(Parser, Debug)]
#[command(about = "Fuzz vcnode's command parser, P-DATA reassembly and ingest checks")]
struct Args {
    /// A target (command, pdata, scan) or `all`.
    #[arg(long, default_value = "all")]
    target: String,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// A fixed number of executions per target instead of a time.
    #[arg(long)]
    runs: Option<u64>,
    /// Seed of the mutation PRNG (a run is reproducible for a seed and a budget in runs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where crashing inputs go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/crashes"))]
    crashes: PathBuf,
    /// Where each target's current input is kept while it runs.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))]
    work: PathBuf,
    /// Replay these files through --target instead of fuzzing.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// Shrink this panicking input for --target, writing FILE.min.
    #[arg(long)]
    minimize: Option<PathBuf>,
    /// Internal: fuzz one target in this process.
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if !args.replay.is_empty() {
        let (target, files) = (args.target.clone(), args.replay.clone());
        let failed = engine::on_fuzz_thread(move || engine::replay(&target, &files))?;
        for (file, report) in &failed {
            eprintln!("{}: {report}", file.display());
        }
        println!("{} of {} inputs panicked", failed.len(), args.replay.len());
        return Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if let Some(file) = args.minimize.clone() {
        return minimize(&args.target, &file);
    }
    if args.worker {
        let opts = Options {
            target: args.target.clone(),
            budget: match args.runs {
                Some(n) => Budget::Runs(n),
                None => Budget::Time(Duration::from_secs(args.seconds)),
            },
            seed: args.seed,
            crashes: args.crashes.clone(),
            current: Some(args.work.join(format!("fuzz-{}.cur", args.target))),
        };
        let report = engine::on_fuzz_thread(move || engine::fuzz(&opts))?;
        println!("{report}");
        for (location, path) in &report.crashes {
            println!("  crash at {location}: {}", path.display());
        }
        return Ok(if report.crashes.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    supervise(&args)
}

/// Shrinks a crashing input. One that kills its process is replayed in children (slower);
/// one that panics is shrunk in this process.
fn minimize(target: &str, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let input = std::fs::read(file)?;
    let exe = std::env::current_exe()?;
    let scratch = file.with_extension("try");
    let replay_dies = |candidate: &[u8]| -> bool {
        std::fs::write(&scratch, candidate).expect("writing a candidate");
        let status = Command::new(&exe)
            .args(["--target", target, "--replay"])
            .arg(&scratch)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("running a replay");
        status.code().is_none()
    };
    let (small, what) = if replay_dies(&input) {
        let layout = vcnode_fuzz::targets::make(target)
            .ok_or_else(|| anyhow::anyhow!("no target {target:?}"))?
            .layout(&input);
        (
            engine::minimize(input, layout, replay_dies),
            "kills the process".to_string(),
        )
    } else {
        let t = target.to_string();
        let (small, location) = engine::on_fuzz_thread(move || engine::minimize_panic(&t, input))?;
        (small, format!("panics at {location}"))
    };
    let _ = std::fs::remove_file(&scratch);
    let out = file.with_extension("min");
    std::fs::write(&out, &small)?;
    println!("{} bytes, still {what}: {}", small.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs each target in a child; a child that dies leaves its current input, kept as a crash.
fn supervise(args: &Args) -> anyhow::Result<ExitCode> {
    let targets: Vec<&str> = match args.target.as_str() {
        "all" => NAMES.to_vec(),
        // The canaries (tests of this harness) run only when named.
        one if NAMES.contains(&one) || one.starts_with("canary-") => vec![one],
        other => anyhow::bail!("unknown target {other:?}; targets: {NAMES:?} or all"),
    };
    std::fs::create_dir_all(&args.work)?;
    let exe = std::env::current_exe()?;
    println!("fuzzing {targets:?} with seed {}", args.seed);
    let mut failed = Vec::new();
    for target in targets {
        let mut child = Command::new(&exe);
        child
            .arg("--worker")
            .args(["--target", target])
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .arg("--crashes")
            .arg(&args.crashes)
            .arg("--work")
            .arg(&args.work);
        if let Some(runs) = args.runs {
            child.args(["--runs", &runs.to_string()]);
        }
        let status = child
            .status()
            .with_context(|| format!("running the {target} worker"))?;
        match status.code() {
            Some(0) => {}
            Some(1) => failed.push(format!("{target}: panics (inputs in {})", args.crashes.display())),
            _ => {
                let cur = args.work.join(format!("fuzz-{target}.cur"));
                let input = std::fs::read(&cur).with_context(|| format!("reading {}", cur.display()))?;
                std::fs::create_dir_all(&args.crashes)?;
                let saved = args
                    .crashes
                    .join(format!("{target}-{}.bin", engine::input_hash(&input)));
                std::fs::write(&saved, &input)?;
                std::fs::write(
                    saved.with_extension("txt"),
                    format!("the {target} worker died: {status} (a stack overflow aborts)\n"),
                )?;
                failed.push(format!(
                    "{target}: the process died ({status}); input saved to {}",
                    saved.display()
                ));
            }
        }
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &failed {
        eprintln!("FUZZ FAILURE {f}");
    }
    Ok(ExitCode::FAILURE)
}
