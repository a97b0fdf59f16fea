//! The CUDA path. On a machine without a usable GPU (CI, most of ours) a node asked for
//! `device = "cuda"` must refuse to start and say what to install; on a GPU machine the derived
//! image made on CUDA (bf16, what `precision = "auto"` runs there) must match the CPU one (f32)
//! within the stated tolerance. Each test says why it does not apply where it does not, and
//! returns: the only skips the project allows.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn cuda_usable() -> bool {
    vcnode_models::device::inspect(vcnode_models::device::DeviceRequest::Cuda(0), None)
        .resolved
        .is_ok()
}

fn process(config: &Path, out: &Path, files: &[&Path]) -> Vec<std::path::PathBuf> {
    let o = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["process", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(Into::into)
        .collect()
}

#[test]
fn a_cuda_request_without_a_gpu_stops_start_up_saying_what_to_install() {
    if cuda_usable() {
        eprintln!("not applicable: this machine has a usable GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with_model(dir.path(), "", shipped_model().to_str().unwrap(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("device = \"cpu\"", "device = \"cuda\"");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a node asked for CUDA must not start on the CPU"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[inference] device"), "{stderr}");
    assert!(
        stderr.contains("scripts/setup.sh"),
        "says how to install it: {stderr}"
    );
    assert!(
        stderr.contains("VCNODE_TORCH_LIB"),
        "or where to point it: {stderr}"
    );
    // `vcnode doctor` says the same, with what it found.
    let doctor = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!doctor.status.success());
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("NVIDIA driver:"), "{report}");
    assert!(report.contains("inference device: none"), "{report}");
}

#[test]
fn the_derived_image_made_on_cuda_matches_the_cpu_one() {
    if !cuda_usable() {
        eprintln!("not applicable: no usable GPU here (vcnode doctor says why)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = phantom_pairs(dir.path(), 91, 832, 640);
    let le: Vec<&Path> = cases.iter().take(2).map(|(le, _)| le.as_path()).collect();
    let cpu = write_config_with_model(dir.path(), "", shipped_model().to_str().unwrap(), "");
    let gpu_dir = dir.path().join("gpu");
    std::fs::create_dir_all(&gpu_dir).unwrap();
    let gpu = write_config_with_model(&gpu_dir, "", shipped_model().to_str().unwrap(), "");
    let text = std::fs::read_to_string(&gpu)
        .unwrap()
        .replace("device = \"cpu\"", "device = \"cuda\"");
    std::fs::write(&gpu, text).unwrap();
    let on_cpu = process(&cpu, &dir.path().join("cpu-out"), &le);
    let on_gpu = process(&gpu, &dir.path().join("gpu-out"), &le);
    assert_eq!(on_cpu.len(), on_gpu.len());
    for (a, b) in on_cpu.iter().zip(&on_gpu) {
        assert_eq!(
            sop_instance_uid(a),
            sop_instance_uid(b),
            "same deterministic UIDs"
        );
        let (x, y) = (
            vcnode::pixels::read_file(a).unwrap().windowed(),
            vcnode::pixels::read_file(b).unwrap().windowed(),
        );
        let mse = x
            .iter()
            .zip(&y)
            .map(|(p, q)| ((p - q) as f64).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        let psnr = 10.0 * (1.0 / mse.max(1e-12)).log10();
        eprintln!("CUDA bf16 against CPU f32: PSNR {psnr:.1} dB");
        // The tolerance of models/tests/networks.rs (bf16 against f32), less a margin for the
        // 12-bit quantization of the stored images.
        assert!(psnr >= 40.0, "CUDA output differs from CPU: PSNR {psnr:.1} dB");
    }
}
