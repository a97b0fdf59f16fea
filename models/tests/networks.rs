//! The networks and their weights' round trip, on CPU. Training is tested in the lab
//! (`models/lab/tests`).

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use vcnode_models::manifest::{sha256_file, Manifest, WeightsFormat, WeightsRef, MANIFEST_FORMAT};
use vcnode_models::model::{save_safetensors, RcModel, GENERATOR_PREFIX};
use vcnode_models::nets::{Generator, GeneratorConfig, ModelKind, PatchGan};
use vcnode_models::preprocess::{InputSpec, Normalization};

fn small(scpa: bool) -> GeneratorConfig {
    GeneratorConfig {
        channels: vec![4, 8, 8, 16, 16],
        ..GeneratorConfig::paper(scpa)
    }
}

#[test]
fn every_model_has_the_right_shapes_at_the_paper_sizes() {
    tch::manual_seed(0);
    for (rows, cols) in [(640, 512), (640, 320)] {
        let x = Tensor::rand([1, 1, rows, cols], (Kind::Float, Device::Cpu));
        for kind in [
            ModelKind::ScpaUnet,
            ModelKind::ScpaCgan,
            ModelKind::Unet,
            ModelKind::Pix2pix,
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let g = Generator::new(vs.root() / GENERATOR_PREFIX, &small(kind.uses_scpa()));
            let out = tch::no_grad(|| g.run(&x, true));
            assert_eq!(out.image.size(), vec![1, 1, rows, cols], "{kind:?}");
            let lo = f64::try_from(out.image.min()).unwrap();
            let hi = f64::try_from(out.image.max()).unwrap();
            assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
            if kind.uses_scpa() {
                // One attention map per encoder and decoder stage; the last is full size.
                assert_eq!(out.attention.len(), 9, "{kind:?}");
                assert_eq!(out.attention.last().unwrap().size(), vec![1, 2, rows, cols]);
            } else {
                assert!(out.attention.is_empty());
            }
            if kind.adversarial() {
                let dvs = nn::VarStore::new(Device::Cpu);
                let d = PatchGan::new(dvs.root() / "discriminator", 2, 8);
                let logits = tch::no_grad(|| d.forward_t(&Tensor::cat(&[&x, &out.image], 1), false));
                // 70×70 PatchGAN: three halvings, then two 4×4 convs with padding 1.
                assert_eq!(logits.size(), vec![1, 1, rows / 8 - 2, cols / 8 - 2], "{kind:?}");
            }
        }
    }
}

#[test]
fn the_paper_configuration_has_about_seven_million_parameters() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _g = Generator::new(vs.root() / GENERATOR_PREFIX, &GeneratorConfig::paper(true));
    let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    assert!((5_000_000..10_000_000).contains(&n), "{n} parameters");
}

fn write_manifest(
    dir: &std::path::Path,
    vs: &nn::VarStore,
    config: &GeneratorConfig,
    kind: Kind,
) -> std::path::PathBuf {
    let weights = dir.join("w.safetensors");
    save_safetensors(vs, &weights, kind).unwrap();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        model: ModelKind::ScpaUnet,
        generator: config.clone(),
        input: InputSpec {
            rows: 64,
            cols: 48,
            normalization: Normalization::ZeroOne,
        },
        weights: WeightsRef {
            file: "w.safetensors".into(),
            format: WeightsFormat::Safetensors,
            dtype: format!("{kind:?}"),
            sha256: sha256_file(&weights).unwrap(),
            parameters: 0,
        },
        training: None,
        metrics: serde_json::Value::Null,
        created_by: "test".into(),
        input_profile: None,
    };
    let path = dir.join("manifest.json");
    manifest.save(&path).unwrap();
    path
}

#[test]
fn saved_weights_load_to_identical_outputs_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(1);
    let config = small(true);
    let vs = nn::VarStore::new(Device::Cpu);
    let g = Generator::new(vs.root() / GENERATOR_PREFIX, &config);
    let x = Tensor::rand([2, 1, 64, 48], (Kind::Float, Device::Cpu));
    // Training-mode passes move the batch norms' running statistics away from their initial
    // values: those are part of the weights and must travel with them.
    let fresh = tch::no_grad(|| g.run(&x, false).image);
    tch::no_grad(|| {
        for _ in 0..3 {
            let _ = g.run_t(&(&x * 3.0 + 1.0), true, false);
        }
    });
    let expected = tch::no_grad(|| g.run(&x, false).image);
    assert!(!expected.equal(&fresh), "running statistics did not change");
    let path = write_manifest(dir.path(), &vs, &config, Kind::Float);
    let loaded = RcModel::load(&path, Device::Cpu).unwrap();
    let got = loaded.synthesize(&x);
    assert!(got.equal(&expected), "save→load must give identical outputs");
    let (_, attention) = loaded.synthesize_with_attention(&x);
    assert_eq!(attention.unwrap().size(), vec![2, 1, 64, 48]);

    // Half-precision storage loads too (into f32), close to the original.
    let half = write_manifest(dir.path(), &vs, &config, Kind::Half);
    let diff = f64::try_from(
        (RcModel::load(&half, Device::Cpu).unwrap().synthesize(&x) - &expected)
            .abs()
            .max(),
    )
    .unwrap();
    assert!(diff < 1e-2, "{diff}");

    // A changed weights file no longer matches its manifest's sha256.
    let mut bytes = std::fs::read(dir.path().join("w.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(dir.path().join("w.safetensors"), bytes).unwrap();
    let err = RcModel::load(&half, Device::Cpu)
        .err()
        .expect("tampered weights must not load")
        .to_string();
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn recalibrated_batch_norm_makes_inference_match_the_images_it_was_recalibrated_on() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let g = Generator::new(vs.root() / GENERATOR_PREFIX, &small(true));
    // Inputs unlike the fresh running statistics (mean 0, variance 1): inference is off.
    let x = Tensor::rand([4, 1, 64, 48], (Kind::Float, Device::Cpu)) * 3.0 + 5.0;
    let batch_stats = tch::no_grad(|| g.run_t(&x, true, false).image);
    let gap = |g: &Generator| f64::try_from((g.run(&x, false).image - &batch_stats).abs().max()).unwrap();
    let before = gap(&g);
    assert!(before > 1e-2, "the test needs stale statistics: {before}");
    // Two halves, averaged: the statistics of the whole set up to the half-batch variances,
    // which leave a residual that depends on the weights and inputs drawn (tests share torch's
    // global generator, so those change with what runs beside this one).
    let seen = g.recalibrate_batch_norm([x.narrow(0, 0, 2), x.narrow(0, 2, 2)]);
    assert_eq!(seen, 2);
    let after = gap(&g);
    assert!(after < before / 20.0 && after < 2e-2, "{before} -> {after}");
    // Nothing to see leaves the statistics as they were.
    assert_eq!(g.recalibrate_batch_norm(std::iter::empty()), 0);
    assert!((gap(&g) - after).abs() < 1e-9);
}

#[test]
fn torchscript_and_foreign_safetensors_load_through_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let config = small(true);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let g = Generator::new(vs.root() / GENERATOR_PREFIX, &config);
    vs.freeze();
    let x = Tensor::rand([1, 1, 64, 48], (Kind::Float, Device::Cpu));
    let expected = tch::no_grad(|| g.run(&x, false).image);

    // A TorchScript generator, as `torch.jit.save` would write it (here traced from ours).
    let traced =
        tch::CModule::create_by_tracing("Generator", "forward", &[x.shallow_clone()], &mut |inputs| {
            vec![g.run(&inputs[0], false).image]
        })
        .unwrap();
    traced.save(dir.path().join("g.pt")).unwrap();
    let path = write_manifest(dir.path(), &vs, &config, Kind::Float);
    let mut m = Manifest::load(&path).unwrap();
    m.weights = WeightsRef {
        file: "g.pt".into(),
        format: WeightsFormat::Torchscript,
        dtype: "f32".into(),
        sha256: sha256_file(&dir.path().join("g.pt")).unwrap(),
        parameters: 0,
    };
    let ts_manifest = dir.path().join("torchscript.json");
    m.save(&ts_manifest).unwrap();
    let got = RcModel::load(&ts_manifest, Device::Cpu).unwrap().synthesize(&x);
    assert!(f64::try_from((got - &expected).abs().max()).unwrap() < 1e-5);

    // safetensors written elsewhere (e.g. PyTorch's state_dict with the same names): extra
    // tensors are ignored, a missing one is named.
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.push(("optimizer.step".into(), Tensor::from_slice(&[7i64])));
    Tensor::write_safetensors(&named, dir.path().join("w.safetensors")).unwrap();
    let mut m = Manifest::load(&path).unwrap();
    m.weights.sha256 = sha256_file(&dir.path().join("w.safetensors")).unwrap();
    m.save(&path).unwrap();
    assert!(RcModel::load(&path, Device::Cpu)
        .unwrap()
        .synthesize(&x)
        .equal(&expected));
    named.retain(|(n, _)| n != "generator.head.weight");
    Tensor::write_safetensors(&named, dir.path().join("w.safetensors")).unwrap();
    m.weights.sha256 = sha256_file(&dir.path().join("w.safetensors")).unwrap();
    m.save(&path).unwrap();
    let err = RcModel::load(&path, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("generator.head.weight"), "{err}");
}
