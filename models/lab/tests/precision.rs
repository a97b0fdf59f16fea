//! The shipped generator's reduced precision against f32 on a phantom image.

use tch::{Device, Kind, Tensor};
use vcnode_lab::phantom::{case_config, simulate};
use vcnode_models::model::{Precision, RcModel};

/// The shipped generator in bf16 (what `precision = "auto"` runs on CUDA) against f32, on a
/// phantom LE image at the model's input size. The tolerance: the synthetic RC within 45 dB PSNR
/// of the f32 one (RMS difference under 0.6% of the output range) and 999 pixels in 1000 within
/// 0.02 of it (a rare pixel on a steep edge of the sigmoid may move more; measured here 58 dB,
/// worst pixel 0.10). The f32 model's own error against the true RC is far larger, so this
/// cannot change a reading. Runs on the CPU here; on a GPU machine `VCNODE_TEST_DEVICE=cuda` runs it there.
#[test]
fn bf16_inference_stays_within_the_stated_tolerance_of_f32() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../weights/scpa-unet.json");
    let device = match std::env::var("VCNODE_TEST_DEVICE").as_deref() {
        Ok("cuda") => vcnode_models::device::resolve(vcnode_models::device::DeviceRequest::Cuda(0), None)
            .expect("VCNODE_TEST_DEVICE=cuda needs a usable GPU"),
        _ => Device::Cpu,
    };
    let mut model = RcModel::load(&manifest, device).unwrap();
    let (rows, cols) = (model.manifest.input.rows, model.manifest.input.cols);
    let case = simulate(&case_config(7, 0, 1, rows as usize, cols as usize));
    let le: Vec<f32> = case.le.iter().map(|&v| v as f32 / 4095.0).collect();
    let x = Tensor::from_slice(&le).reshape([1, 1, rows, cols]);
    let f32_out = model.synthesize(&x);
    model.set_precision(Precision::Bf16);
    assert_eq!(model.kind, Kind::BFloat16);
    let bf16_out = model.synthesize(&x);
    assert_eq!(bf16_out.kind(), Kind::Float, "outputs come back in f32");
    let diff = (&bf16_out - &f32_out).abs();
    let rms = f64::try_from(diff.square().mean(Kind::Float).sqrt()).unwrap();
    let worst = f64::try_from(diff.max()).unwrap();
    let p999 = f64::try_from(diff.flatten(0, -1).quantile_scalar(0.999, None, false, "linear")).unwrap();
    let psnr = 20.0 * (1.0 / rms).log10();
    eprintln!(
        "bf16 vs f32 on {device:?}: PSNR {psnr:.1} dB, RMS {rms:.5}, p99.9 {p999:.4}, worst pixel {worst:.4}"
    );
    assert!(psnr >= 45.0, "bf16 PSNR against f32 {psnr:.1} dB < 45 dB");
    assert!(
        p999 <= 0.02,
        "bf16: one pixel in 1000 differs by more than {p999:.4}"
    );
    // And bf16 is not a no-op that would pass any tolerance.
    assert!(rms > 0.0);
}

/// bf16 autocast training on CUDA learns like f32: the paper's recipe on toy pairs, the loss
/// falls by the same measure in both. Needs a GPU: `bench/gpu.sh` runs it with
/// `--include-ignored` and VCNODE_TEST_DEVICE=cuda.
#[test]
#[ignore = "needs CUDA (bench/gpu.sh)"]
fn bf16_autocast_training_on_cuda_learns_like_f32() {
    use vcnode_lab::train::autocast::{cuda_autocast_enabled, Bf16Autocast};
    use vcnode_lab::train::fit::{train, Event, PairTensors, TrainConfig};
    use vcnode_models::nets::{GeneratorConfig, ModelKind};
    use vcnode_models::preprocess::{InputSpec, Normalization};
    let device = vcnode_models::device::resolve(vcnode_models::device::DeviceRequest::Cuda(0), None)
        .expect("this test needs a usable GPU");
    // Under the scope a convolution runs in bf16; outside it in f32.
    let x = Tensor::rand([1, 1, 32, 32], (Kind::Float, device));
    let w = Tensor::rand([4, 1, 3, 3], (Kind::Float, device));
    {
        let _bf16 = Bf16Autocast::enter();
        assert!(cuda_autocast_enabled());
        assert_eq!(x.conv2d(&w, None::<Tensor>, 1, 1, 1, 1).kind(), Kind::BFloat16);
    }
    assert_eq!(x.conv2d(&w, None::<Tensor>, 1, 1, 1, 1).kind(), Kind::Float);

    let input = InputSpec {
        rows: 32,
        cols: 32,
        normalization: Normalization::ZeroOne,
    };
    tch::manual_seed(7);
    let le = Tensor::rand([16, 1, 32, 32], (Kind::Float, Device::Cpu)) * 0.2 + 0.4;
    let data = PairTensors {
        rc: (&le - 0.4) * 2.0 + 0.1,
        le,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut falls = Vec::new();
    for mixed_precision in [false, true] {
        let config = TrainConfig {
            generator: GeneratorConfig {
                channels: vec![8, 16, 16],
                ..GeneratorConfig::paper(true)
            },
            epochs: 8,
            batch: 4,
            learning_rate: 2e-3,
            mixed_precision,
            ..TrainConfig::paper(ModelKind::ScpaUnet, input)
        };
        let mut l1 = Vec::new();
        train(
            &config,
            &data,
            None,
            device,
            &dir.path().join(format!("{mixed_precision}")),
            false,
            &mut |e| {
                if let Event::Epoch(s) = e {
                    l1.push(s.l1)
                }
            },
        )
        .unwrap();
        eprintln!("mixed precision {mixed_precision}: L1 by epoch {l1:?}");
        falls.push(l1[7] / l1[0]);
    }
    assert!(falls[1] < 0.7, "bf16 autocast did not learn: {falls:?}");
    assert!(
        (falls[1] - falls[0]).abs() < 0.2,
        "bf16 and f32 learn differently: {falls:?}"
    );
}
