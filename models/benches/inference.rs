//! Inference time of the generators on this machine: the shipped model's architecture at its
//! input size and at the paper's 640×512, and the paper's network, each in tch eager mode and
//! through libtorch's TorchScript runtime (the same network traced), measured in the same run.
//!
//!   cargo bench -p vcnode-models --bench inference   (make bench runs it)
//!
//! PyTorch eager cannot be the peer on CPU machines: PyPI's Linux torch wheel needs the CUDA
//! stack (gigabytes) to import. On a GPU machine, `bench/pytorch_eager.py` gives that figure.

use std::time::Instant;

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use vcnode_models::manifest::Manifest;
use vcnode_models::nets::{Generator, GeneratorConfig};

fn time_per_image(iters: usize, batch: i64, f: &dyn Fn()) -> f64 {
    f(); // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() * 1000.0 / (iters as f64 * batch as f64)
}

fn bench(name: &str, config: &GeneratorConfig, rows: i64, cols: i64, iters: usize) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let g = Generator::new(vs.root() / "generator", config);
    vs.freeze();
    let x = Tensor::rand([1, 1, rows, cols], (Kind::Float, Device::Cpu));
    let eager = tch::no_grad(|| time_per_image(iters, 1, &|| drop(g.forward(&x))));
    let traced = tch::CModule::create_by_tracing("G", "forward", &[x.shallow_clone()], &mut |i| {
        vec![g.forward(&i[0])]
    })
    .expect("trace");
    let script = tch::no_grad(|| time_per_image(iters, 1, &|| drop(traced.forward(&x))));
    println!(
        "{name:<44} {rows}x{cols}: tch eager {eager:8.1} ms/image | TorchScript {script:8.1} ms/image | ratio TorchScript/eager {:.2} (above 1: vcnode's eager path faster)",
        script / eager
    );
}

fn main() {
    // `cargo test --all-targets` runs this binary too (without `--bench`): nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tch::manual_seed(0);
    println!("CPU threads: {}", tch::get_num_threads());
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/scpa-unet.json");
    if let Ok(m) = Manifest::load(&shipped) {
        bench(
            &format!("shipped {}", m.model_id()),
            &m.generator,
            m.input.rows,
            m.input.cols,
            10,
        );
        bench(
            &format!("shipped {} architecture", m.model.name()),
            &m.generator,
            640,
            512,
            3,
        );
    }
    bench(
        "paper SCPA-UNet (32,64,128,256,256)",
        &GeneratorConfig::paper(true),
        640,
        512,
        2,
    );
}
