//! The fuzzing loop: pick a corpus entry, mutate it, record it where a dying process leaves it,
//! run it, catch panics, keep inputs that behave in a new way.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::mutate::{Layout, Mutator};
use crate::targets::{self, Target};

/// Targets run on threads with this stack: small, so that unbounded recursion shows up at once
/// (the node's tokio workers have 2 MiB).
pub const STACK_BYTES: usize = 1 << 20;
/// Corpus entries kept beyond the seeds.
const MAX_CORPUS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("no fuzz target {0:?}")]
    NoTarget(String),
    #[error("the input does not panic")]
    NoPanic,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn make(name: &str) -> Result<Box<dyn Target>, FuzzError> {
    targets::make(name).ok_or_else(|| FuzzError::NoTarget(name.into()))
}

#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Time(Duration),
    Runs(u64),
}

#[derive(Debug)]
pub struct Options {
    pub target: String,
    pub budget: Budget,
    pub seed: u64,
    /// Where crashing inputs and their panic reports go.
    pub crashes: PathBuf,
    /// The file holding the input being run, for a process that dies (stack overflow, abort).
    pub current: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub execs: u64,
    pub elapsed: Duration,
    pub corpus: usize,
    pub signatures: usize,
    /// Distinct panics (by location), with the saved input.
    pub crashes: Vec<(String, PathBuf)>,
    /// Distinct notes (by kind), with the saved input: oddities that are not failures.
    pub notes: Vec<(String, PathBuf)>,
    pub panics: u64,
    /// The target's own counts of how far runs got (since its last restart after a panic).
    pub stats: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}: {} execs in {:.1} s ({:.0}/s), {} behaviours, corpus {}, {} panics, {} distinct crashes, {} notes",
            self.target,
            self.execs,
            secs,
            self.execs as f64 / secs.max(1e-9),
            self.signatures,
            self.corpus,
            self.panics,
            self.crashes.len(),
            self.notes.len()
        )?;
        if !self.stats.is_empty() {
            write!(f, "; {}", self.stats)?;
        }
        Ok(())
    }
}

thread_local! {
    /// The last panic on this thread: location, message, backtrace (unresolved: resolving
    /// symbols takes seconds, so only a new crash's backtrace is printed).
    static LAST_PANIC: RefCell<Option<Panic>> = const { RefCell::new(None) };
}

/// Panics on fuzzing threads are recorded for the report instead of printed.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some("fuzz") {
                return default(info);
            }
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let panic = Panic {
                location,
                message: info.to_string(),
                backtrace: std::backtrace::Backtrace::force_capture(),
            };
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(panic));
        }));
    });
}

/// Runs `work` on a thread named "fuzz" with [`STACK_BYTES`] of stack.
pub fn on_fuzz_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    install_panic_hook();
    std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(STACK_BYTES)
        .spawn(work)
        .expect("spawning the fuzz thread")
        .join()
        .unwrap_or_else(|e| panic::resume_unwind(e))
}

/// A caught panic.
pub struct Panic {
    pub location: String,
    pub message: String,
    pub backtrace: std::backtrace::Backtrace,
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.message, self.backtrace)
    }
}

/// Runs one input through a target; Err holds the panic.
pub fn run_one(target: &mut dyn Target, input: &[u8]) -> Result<u64, Panic> {
    LAST_PANIC.with(|p| p.borrow_mut().take());
    panic::catch_unwind(AssertUnwindSafe(|| target.run(input))).map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| Panic {
                location: "unknown".into(),
                message: "a panic not seen by the hook (not on a fuzz thread?)".into(),
                backtrace: std::backtrace::Backtrace::disabled(),
            })
    })
}

pub fn input_hash(input: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The input being run, written before each run (pwrite + set_len) so that it survives the
/// process: a stack overflow aborts without unwinding.
struct Current(File);

impl Current {
    fn record(&self, input: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(input, 0)?;
        self.0.set_len(input.len() as u64)
    }
}

fn save_crash(dir: &Path, target: &str, input: &[u8], report: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{target}-{}.bin", input_hash(input)));
    std::fs::write(&path, input)?;
    std::fs::write(path.with_extension("txt"), report)?;
    Ok(path)
}

/// Fuzzes one target for the budget. Call on a fuzz thread ([`on_fuzz_thread`]).
pub fn fuzz(opts: &Options) -> Result<Report, FuzzError> {
    let mut target = make(&opts.target)?;
    let current = opts
        .current
        .as_ref()
        .map(|p| File::create(p).map(Current))
        .transpose()?;
    let mut mutator = Mutator {
        rng: StdRng::seed_from_u64(opts.seed),
        max_len: target.max_len(),
    };
    let started = Instant::now();
    let mut corpus = target.seeds();
    let n_seeds = corpus.len();
    let mut seen = HashSet::new();
    let mut crashes: HashMap<String, PathBuf> = HashMap::new();
    let mut notes: HashMap<String, PathBuf> = HashMap::new();
    let (mut execs, mut panics) = (0u64, 0u64);
    let mut queue: Vec<Vec<u8>> = corpus.clone();
    loop {
        let done = match opts.budget {
            Budget::Time(t) => started.elapsed() >= t,
            Budget::Runs(n) => execs >= n,
        };
        if done {
            break;
        }
        // Seeds run unmutated first; then mutants of corpus entries.
        let input = match queue.pop() {
            Some(seed) => seed,
            None => {
                let parent = mutator.rng.gen_range(0..corpus.len());
                let other = mutator.rng.gen_range(0..corpus.len());
                let mut input = corpus[parent].clone();
                let layout = target.layout(&input);
                mutator.mutate(&mut input, layout, &corpus[other]);
                input
            }
        };
        if let Some(current) = &current {
            current.record(&input)?;
        }
        execs += 1;
        match run_one(target.as_mut(), &input) {
            Ok(sig) => {
                if let Some(kind) = target.take_note() {
                    if let std::collections::hash_map::Entry::Vacant(slot) = notes.entry(kind) {
                        let kind = slot.key();
                        let path = save_crash(&opts.crashes.join("notes"), &opts.target, &input, kind)?;
                        eprintln!("{}: note: {kind}; input saved to {}", opts.target, path.display());
                        slot.insert(path);
                    }
                }
                if seen.insert(sig) {
                    if corpus.len() < n_seeds + MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let slot = mutator.rng.gen_range(n_seeds..corpus.len());
                        corpus[slot] = input;
                    }
                }
            }
            Err(panic) => {
                panics += 1;
                let Panic {
                    location,
                    message,
                    backtrace,
                } = panic;
                if let std::collections::hash_map::Entry::Vacant(slot) = crashes.entry(location) {
                    // Resolving the backtrace takes seconds: only for a new crash.
                    let report = format!("{message}\n{backtrace}");
                    let path = save_crash(&opts.crashes, &opts.target, &input, &report)?;
                    eprintln!(
                        "{}: {}; input saved to {}",
                        opts.target,
                        message.replace('\n', " "),
                        path.display()
                    );
                    slot.insert(path);
                }
                // A panic may leave the target's state (e.g. its runtime) unusable.
                target = targets::make(&opts.target).expect("the target exists");
            }
        }
    }
    Ok(Report {
        target: opts.target.clone(),
        execs,
        elapsed: started.elapsed(),
        corpus: corpus.len(),
        signatures: seen.len(),
        crashes: crashes.into_iter().collect(),
        notes: notes.into_iter().collect(),
        panics,
        stats: target.stats(),
    })
}

/// Runs saved inputs through a target (regressions, or reproducing a crash); returns the
/// panics as (file, report).
pub fn replay(target_name: &str, files: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, FuzzError> {
    let mut target = make(target_name)?;
    let mut failed = Vec::new();
    for file in files {
        let input = std::fs::read(file)?;
        if let Err(panic) = run_one(target.as_mut(), &input) {
            failed.push((file.clone(), panic.to_string()));
            target = targets::make(target_name).expect("the target exists");
        }
    }
    Ok(failed)
}

/// Shrinks an input while `fails` holds for it: whole elements or PDUs first (at the
/// boundaries the layout finds), then ever smaller byte ranges.
pub fn minimize(input: Vec<u8>, layout: Layout, mut fails: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut best = input;
    // Whole elements or PDUs, from the end (earlier boundaries stay valid after a removal).
    let mut bounds = crate::mutate::fields(&best, layout).boundaries;
    bounds.push(best.len());
    for w in (0..bounds.len().saturating_sub(1)).rev() {
        let (a, b) = (bounds[w], bounds[w + 1]);
        if a < b && b <= best.len() {
            let mut candidate = best.clone();
            candidate.drain(a..b);
            if fails(&candidate) {
                best = candidate;
            }
        }
    }
    // Then byte ranges, halving their size.
    let mut chunk = (best.len() / 2).max(1);
    loop {
        let mut at = 0;
        while at < best.len() {
            let mut candidate = best.clone();
            candidate.drain(at..(at + chunk).min(best.len()));
            if fails(&candidate) {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    best
}

/// Shrinks an input that panics while it panics at the same place.
pub fn minimize_panic(target_name: &str, input: Vec<u8>) -> Result<(Vec<u8>, String), FuzzError> {
    let mut target = make(target_name)?;
    let location = match run_one(target.as_mut(), &input) {
        Ok(_) => return Err(FuzzError::NoPanic),
        Err(panic) => panic.location,
    };
    let layout = target.layout(&input);
    let small = minimize(input, layout, |candidate| {
        match run_one(target.as_mut(), candidate) {
            Err(panic) => {
                target = targets::make(target_name).expect("the target exists");
                panic.location == location
            }
            Ok(_) => false,
        }
    });
    Ok((small, location))
}
