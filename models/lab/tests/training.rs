//! Training on toy data, on CPU: the loss falls, resume continues, fine-tuning starts from the
//! given weights and a frozen phase keeps whole-image statistics.

use tch::nn;
use tch::{Device, Kind};
use vcnode_lab::train::fit::{train, validate, Event, PatchSampling, TrainConfig};
use vcnode_models::model::{save_safetensors, GENERATOR_PREFIX};
use vcnode_models::nets::{Generator, GeneratorConfig, ModelKind};

mod common;
use common::{toy_input, toy_pairs};

fn small(scpa: bool) -> GeneratorConfig {
    GeneratorConfig {
        channels: vec![4, 8, 8, 16, 16],
        ..GeneratorConfig::paper(scpa)
    }
}

#[test]
fn fine_tuning_starts_from_the_given_weights_and_a_frozen_phase_keeps_whole_image_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let input = toy_input();
    let generator = GeneratorConfig {
        channels: vec![8, 16, 16],
        ..small(true)
    };
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let start = Generator::new(vs.root() / GENERATOR_PREFIX, &generator);
    let init = dir.path().join("start.safetensors");
    save_safetensors(&vs, &init, Kind::Float).unwrap();
    let data = toy_pairs(8);
    // lr 0: the weights cannot move, so any change in the output is the batch norms' statistics.
    let config = TrainConfig {
        generator,
        epochs: 2,
        batch: 4,
        learning_rate: 0.0,
        patches: Some(PatchSampling {
            size: 16,
            enhancement_share: 0.8,
        }),
        frozen_norm_epochs: 1,
        init: Some(init),
        ..TrainConfig::paper(ModelKind::ScpaUnet, input)
    };
    let infer = |g: &Generator| tch::no_grad(|| g.run(&data.le, false).image);
    let whole_batch = tch::no_grad(|| start.run_t(&data.le, true, false).image);
    let trained = train(
        &config,
        &data,
        None,
        Device::Cpu,
        &dir.path().join("ft"),
        false,
        &mut |_| {},
    )
    .unwrap();
    // The frozen epoch ran on whole-image statistics and did not move them: inference on the
    // training images matches the batch-statistics pass over the same images.
    let gap = f64::try_from((infer(&trained.generator) - &whole_batch).abs().max()).unwrap();
    assert!(gap < 5e-3, "{gap}");
    // Without the frozen phase, the running statistics follow the 16×16 crops instead.
    let unfrozen = TrainConfig {
        frozen_norm_epochs: 0,
        ..config.clone()
    };
    let crops = train(
        &unfrozen,
        &data,
        None,
        Device::Cpu,
        &dir.path().join("crops"),
        false,
        &mut |_| {},
    )
    .unwrap();
    let gap = f64::try_from((infer(&crops.generator) - &whole_batch).abs().max()).unwrap();
    assert!(gap > 5e-3, "{gap}");
    // Both started from the given weights, not a fresh initialization.
    for (name, t) in vs.variables() {
        if !name.contains("running") {
            let after = &trained.vs.variables()[&name];
            assert!(after.equal(&t), "{name} moved or was not loaded");
        }
    }
}

#[test]
fn a_few_training_steps_reduce_the_l1_loss() {
    let dir = tempfile::tempdir().unwrap();
    let input = toy_input();
    for kind in [ModelKind::ScpaUnet, ModelKind::ScpaCgan] {
        let config = TrainConfig {
            generator: GeneratorConfig {
                channels: vec![8, 16, 16],
                ..small(true)
            },
            epochs: 8,
            batch: 4,
            learning_rate: 2e-3,
            discriminator_base: 8,
            ..TrainConfig::paper(kind, input)
        };
        let data = toy_pairs(16);
        let mut epochs = Vec::new();
        let trained = train(
            &config,
            &data,
            Some(&data),
            Device::Cpu,
            &dir.path().join(kind.name()),
            false,
            &mut |e| {
                if let Event::Epoch(s) = e {
                    epochs.push(s.l1)
                }
            },
        )
        .unwrap();
        assert_eq!(epochs.len(), 8);
        assert!(
            epochs[7] < epochs[0] * 0.7,
            "{kind:?} loss did not fall: {epochs:?}"
        );
        assert_eq!(trained.steps, 8 * 4);
        // The U-Net ends on its best validation epoch's weights; the cGAN on its last ones.
        let val: Vec<f64> = trained.history.iter().map(|s| s.val_l1.unwrap()).collect();
        if kind.adversarial() {
            assert_eq!(trained.selected_epoch, None);
        } else {
            let best = (0..val.len()).min_by(|&a, &b| val[a].total_cmp(&val[b])).unwrap();
            assert_eq!(trained.selected_epoch, Some(best), "{val:?}");
            let now = validate(&trained.generator, &data, Device::Cpu, 4).l1;
            assert!((now - val[best]).abs() < 1e-6, "{now} vs best {}", val[best]);
        }
        // Resume continues after the last checkpoint instead of starting over.
        let more = TrainConfig {
            epochs: 10,
            ..config.clone()
        };
        let resumed = train(
            &more,
            &data,
            None,
            Device::Cpu,
            &dir.path().join(kind.name()),
            true,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(resumed.history.len(), 10);
        assert_eq!(resumed.steps, 10 * 4);
    }
}
