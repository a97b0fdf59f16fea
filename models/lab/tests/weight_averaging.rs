//! The frozen-norm phase keeps the average of its epochs' weights. In a file of its own: it
//! compares two training runs, which must draw the same crops, and tests running beside it in
//! one process would draw from the same global torch generator.

use tch::nn;
use tch::Device;
use vcnode_lab::train::fit::{train, PatchSampling, TrainConfig};
use vcnode_models::model::{load_safetensors, GENERATOR_PREFIX};
use vcnode_models::nets::{Generator, GeneratorConfig, ModelKind};

mod common;
use common::{toy_input, toy_pairs};

#[test]
fn the_frozen_phase_keeps_the_average_of_its_epochs_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_pairs(8);
    let run = |epochs: usize, name: &str| {
        let config = TrainConfig {
            generator: GeneratorConfig {
                channels: vec![8, 16, 16],
                ..GeneratorConfig::paper(false)
            },
            epochs,
            batch: 4,
            learning_rate: 2e-3,
            patches: Some(PatchSampling {
                size: 16,
                enhancement_share: 0.8,
            }),
            frozen_norm_epochs: epochs,
            ..TrainConfig::paper(ModelKind::Unet, toy_input())
        };
        train(
            &config,
            &data,
            None,
            Device::Cpu,
            &dir.path().join(name),
            false,
            &mut |_| {},
        )
        .unwrap()
    };
    // The same seed and data: the two-epoch run passes through the one-epoch run's weights.
    let one = run(1, "one");
    let two = run(2, "two");
    let mut last = nn::VarStore::new(Device::Cpu);
    let _g = Generator::new(last.root() / GENERATOR_PREFIX, two.generator.config());
    load_safetensors(&mut last, &dir.path().join("two/generator.safetensors"), "unet").unwrap();
    let (first, last, kept) = (one.vs.variables(), last.variables(), two.vs.variables());
    let mut moved = 0.0f64;
    for (name, kept) in &kept {
        let mean = (&first[name] + &last[name]) / 2.0;
        let off = f64::try_from((kept - mean).abs().max()).unwrap();
        assert!(off < 1e-6, "{name} is not the mean of the epochs' weights: {off}");
        moved = moved.max(f64::try_from((&last[name] - &first[name]).abs().max()).unwrap());
    }
    assert!(moved > 1e-4, "the second epoch did not train: {moved}");
}
