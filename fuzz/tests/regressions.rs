//! Every input that once crashed a target is replayed (`fuzz/regressions/<target>/`), each
//! target fuzzes briefly from its seeds so that the harness cannot rot, and the harness is
//! shown to catch a panic and a process that dies.

use std::path::{Path, PathBuf};
use std::process::Command;

use vcnode_fuzz::engine::{self, Budget, Options};
use vcnode_fuzz::targets::NAMES;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vcnode-fuzz-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_input_that_crashed_once_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            NAMES.contains(&target.as_str()),
            "{} names no target",
            dir.display()
        );
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        replayed += files.len();
        let failed = engine::on_fuzz_thread(move || engine::replay(&target, &files)).unwrap();
        let reports: Vec<String> = failed
            .iter()
            .map(|(f, r)| format!("{}: {r}", f.display()))
            .collect();
        assert!(failed.is_empty(), "{}", reports.join("\n"));
    }
    assert!(replayed > 0, "no regression inputs under {}", root.display());
}

#[test]
fn each_target_fuzzes_from_its_seeds_without_a_crash() {
    let dir = scratch("short");
    for &target in NAMES {
        let opts = Options {
            target: target.into(),
            budget: Budget::Runs(1500),
            seed: 13,
            crashes: dir.join("crashes"),
            current: Some(dir.join(format!("fuzz-{target}.cur"))),
        };
        let report = engine::on_fuzz_thread(move || engine::fuzz(&opts)).unwrap();
        assert_eq!(report.execs, 1500);
        assert!(report.crashes.is_empty(), "{report}: {:?}", report.crashes);
        // Mutants must behave in new ways, or the mutator has stopped reaching the parsers.
        assert!(report.signatures >= 10, "{report}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn run_canary(name: &str) -> (std::process::Output, Vec<PathBuf>) {
    let dir = scratch(name);
    let out = Command::new(env!("CARGO_BIN_EXE_vcnode-fuzz"))
        .args(["--target", name, "--runs", "5"])
        .arg("--crashes")
        .arg(dir.join("crashes"))
        .arg("--work")
        .arg(&dir)
        .output()
        .unwrap();
    let saved = std::fs::read_dir(dir.join("crashes"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    (out, saved)
}

#[test]
fn a_panic_is_caught_and_its_input_saved() {
    let (out, saved) = run_canary("canary-panic");
    assert!(!out.status.success());
    let bin: Vec<&PathBuf> = saved
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert_eq!(bin.len(), 1, "{saved:?}");
    assert_eq!(std::fs::read(bin[0]).unwrap(), b"panic");
    let report = std::fs::read_to_string(bin[0].with_extension("txt")).unwrap();
    assert!(report.contains("the canary panicked"), "{report}");
}

#[test]
fn a_process_that_dies_leaves_its_input() {
    let (out, saved) = run_canary("canary-overflow");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FUZZ FAILURE canary-overflow: the process died"),
        "{stderr}"
    );
    let bin: Vec<&PathBuf> = saved
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert_eq!(bin.len(), 1, "{saved:?}");
    assert_eq!(std::fs::read(bin[0]).unwrap(), b"overflow");
}
