//! Inference time of the generators on this machine: the shipped model's architecture at its
//! input size and at the paper's 640×512, and the paper's network, each in tch eager mode,
//! through libtorch's TorchScript runtime (the same network traced) and, as the peer, in
//! PyTorch eager mode (`bench/pytorch_eager.py`), all measured in the same run.
//!
//!   cargo bench -p vcnode-models --bench inference   (make bench runs it)
//!
//! With `VCNODE_BENCH_DEVICE=cuda` (bench/gpu.sh) it measures the GPU instead: the paper's
//! SCPA-UNet at 640×512, batch 1 and 8, f32 and bf16, against PyTorch eager and torch.compile
//! on the same card in the same run.
//!
//! The PyTorch peer runs when `VCNODE_BENCH_PYTHON` names a Python with torch, safetensors and
//! numpy (`make bench` provisions one with scripts/fetch-pytorch.sh). Before any timing, the
//! peer runs the shipped weights on a fixed input and must give vcnode's output, so the ratio
//! compares the same network, not a look-alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use vcnode_models::manifest::Manifest;
use vcnode_models::model::RcModel;
use vcnode_models::nets::{Generator, GeneratorConfig};

fn time_per_image(iters: usize, batch: i64, f: &dyn Fn()) -> f64 {
    f(); // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() * 1000.0 / (iters as f64 * batch as f64)
}

/// PyTorch eager, the peer: a Python interpreter and the script that mirrors the generator.
struct PyTorch {
    python: PathBuf,
    script: PathBuf,
}

impl PyTorch {
    fn from_env() -> Option<PyTorch> {
        let python = PathBuf::from(std::env::var_os("VCNODE_BENCH_PYTHON")?);
        // Overridable for a machine where the binary runs outside its checkout (bench/gpu.sh).
        let script = std::env::var_os("VCNODE_BENCH_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/pytorch_eager.py"));
        Some(PyTorch { python, script })
    }

    fn run(&self, manifest: &Path, args: &[String]) -> Result<String, String> {
        let out = Command::new(&self.python)
            .arg(&self.script)
            .arg(manifest)
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", self.python.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Runs the shipped weights on one fixed input in both implementations and compares.
    fn check_same_network(&self, manifest_path: &Path) -> Result<String, String> {
        let model = RcModel::load(manifest_path, Device::Cpu).map_err(|e| e.to_string())?;
        let (rows, cols) = (model.manifest.input.rows, model.manifest.input.cols);
        let x = Tensor::rand([1, 1, rows, cols], (Kind::Float, Device::Cpu));
        let y = model.synthesize(&x);
        let dir = std::env::temp_dir().join(format!("vcnode-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (input, output) = (dir.join("input.f32"), dir.join("output.f32"));
        for (t, p) in [(&x, &input), (&y, &output)] {
            let v = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|e: tch::TchError| e.to_string())?;
            let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
            std::fs::write(p, bytes).map_err(|e| e.to_string())?;
        }
        let paths = [input.display().to_string(), output.display().to_string()];
        let result = self.run(
            manifest_path,
            &["--check".into(), paths[0].clone(), paths[1].clone()],
        );
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// ms per image, parsed from the script's one line of output.
    fn time(&self, manifest: &Path, rows: i64, cols: i64, paper: bool, iters: usize) -> Result<f64, String> {
        self.time_with(manifest, rows, cols, paper, iters, &[])
    }

    fn time_with(
        &self,
        manifest: &Path,
        rows: i64,
        cols: i64,
        paper: bool,
        iters: usize,
        more: &[String],
    ) -> Result<f64, String> {
        let mut args = vec![
            "--rows".into(),
            rows.to_string(),
            "--cols".into(),
            cols.to_string(),
            "--iters".into(),
            iters.to_string(),
        ];
        if paper {
            args.push("--paper".into());
        }
        args.extend(more.iter().cloned());
        let line = self.run(manifest, &args)?;
        line.split(": ")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|ms| ms.parse().ok())
            .ok_or_else(|| format!("unexpected output: {line}"))
    }
}

struct Case {
    name: String,
    config: GeneratorConfig,
    rows: i64,
    cols: i64,
    iters: usize,
    /// The peer builds the paper's widths instead of the shipped ones.
    paper: bool,
}

/// Times one case; the peer loads `manifest` (the shipped one) for the widths it mirrors.
fn bench(case: &Case, manifest: &Path, peer: Option<&PyTorch>) {
    let (rows, cols) = (case.rows, case.cols);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let g = Generator::new(vs.root() / "generator", &case.config);
    vs.freeze();
    let x = Tensor::rand([1, 1, rows, cols], (Kind::Float, Device::Cpu));
    let eager = tch::no_grad(|| time_per_image(case.iters, 1, &|| drop(g.forward(&x))));
    let traced = tch::CModule::create_by_tracing("G", "forward", &[x.shallow_clone()], &mut |i| {
        vec![g.forward(&i[0])]
    })
    .expect("trace");
    let script = tch::no_grad(|| time_per_image(case.iters, 1, &|| drop(traced.forward(&x))));
    let pytorch = match peer.map(|p| p.time(manifest, rows, cols, case.paper, case.iters)) {
        Some(Ok(ms)) => format!(
            " | PyTorch eager {ms:8.1} ms/image | ratio PyTorch/tch {:.2} (above 1: vcnode faster)",
            ms / eager
        ),
        Some(Err(e)) => format!(" | PyTorch eager failed: {e}"),
        None => String::new(),
    };
    println!(
        "{:<44} {rows}x{cols}: tch eager {eager:8.1} ms/image | TorchScript {script:8.1} ms/image{pytorch}",
        case.name
    );
}

/// The GPU measurement: the paper's network on CUDA, tch eager at batch 1 and 8 in f32 and
/// bf16 (weights and activations, as `precision = "bf16"` runs), each beside PyTorch eager and
/// torch.compile (autocast bf16 for the bf16 rows) on the same card.
fn bench_gpu(manifest: &Path, peer: Option<&PyTorch>) {
    let device = vcnode_models::device::resolve(vcnode_models::device::DeviceRequest::Cuda(0), None)
        .expect("VCNODE_BENCH_DEVICE=cuda needs a usable GPU (see vcnode doctor)");
    let gpu = vcnode_models::device::gpu_info();
    println!(
        "GPU: {} | driver {} | CUDA driver API {} | CUDA runtime {} | cuDNN {}",
        gpu.gpus.join(", "),
        gpu.driver.as_deref().unwrap_or("?"),
        gpu.cuda_driver_api.as_deref().unwrap_or("?"),
        tch::utils::version_cudart(),
        tch::utils::version_cudnn()
    );
    tch::Cuda::cudnn_set_benchmark(true);
    let (rows, cols) = (640, 512);
    let iters = 50;
    for (kind, dtype) in [(Kind::Float, "f32"), (Kind::BFloat16, "bf16")] {
        let mut vs = nn::VarStore::new(device);
        let g = Generator::new(vs.root() / "generator", &GeneratorConfig::paper(true));
        vs.set_kind(kind);
        vs.freeze();
        for batch in [1i64, 8] {
            let x = Tensor::rand([batch, 1, rows, cols], (kind, device));
            let tch_ms = tch::no_grad(|| {
                time_per_image(iters, batch, &|| {
                    drop(g.forward(&x));
                    tch::Cuda::synchronize(0);
                })
            });
            let mut line = format!(
                "paper SCPA-UNet {rows}x{cols} batch {batch} {dtype:<4}: tch eager {tch_ms:7.3} ms/image"
            );
            for (name, compile) in [("PyTorch eager", false), ("torch.compile", true)] {
                let mut more = vec![
                    "--device".into(),
                    "cuda".into(),
                    "--batch".into(),
                    batch.to_string(),
                    "--dtype".into(),
                    dtype.into(),
                ];
                if compile {
                    more.push("--compile".into());
                }
                match peer.map(|p| p.time_with(manifest, rows, cols, true, iters, &more)) {
                    Some(Ok(ms)) => {
                        line += &format!(
                            " | {name} {ms:7.3} ms/image (ratio {:.2}, above 1: vcnode faster)",
                            ms / tch_ms
                        )
                    }
                    Some(Err(e)) => line += &format!(" | {name} failed: {e}"),
                    None => {}
                }
            }
            println!("{line}");
        }
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary too (without `--bench`): nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tch::manual_seed(0);
    if std::env::var("VCNODE_BENCH_DEVICE").as_deref() == Ok("cuda") {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/scpa-unet.json");
        let shipped = std::env::var_os("VCNODE_BENCH_MANIFEST")
            .map(PathBuf::from)
            .unwrap_or(shipped);
        bench_gpu(&shipped, PyTorch::from_env().as_ref());
        return;
    }
    println!("CPU threads: {}", tch::get_num_threads());
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/scpa-unet.json");
    let m = Manifest::load(&shipped).expect("the shipped manifest");
    let mut peer = PyTorch::from_env();
    match &peer {
        None => println!("PyTorch peer: off (set VCNODE_BENCH_PYTHON, or run make bench)"),
        Some(p) => match p.check_same_network(&shipped) {
            Ok(line) => println!("PyTorch peer, same network check on the shipped weights: {line}"),
            Err(e) => {
                println!("PyTorch peer left out: it does not run the same network: {e}");
                peer = None;
            }
        },
    }
    let cases = [
        Case {
            name: format!("shipped {}", m.model_id()),
            config: m.generator.clone(),
            rows: m.input.rows,
            cols: m.input.cols,
            iters: 10,
            paper: false,
        },
        Case {
            name: format!("shipped {} architecture", m.model.name()),
            config: m.generator.clone(),
            rows: 640,
            cols: 512,
            iters: 3,
            paper: false,
        },
        Case {
            name: "paper SCPA-UNet (32,64,128,256,256)".into(),
            config: GeneratorConfig::paper(true),
            rows: 640,
            cols: 512,
            iters: 2,
            paper: true,
        },
    ];
    for case in &cases {
        bench(case, &shipped, peer.as_ref());
    }
}
