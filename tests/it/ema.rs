//! `--ema`: the average the optimizer's dispatch keeps (weights and batch-norm statistics)
//! against the reference built from the raw weights of every step, evaluation and the
//! checkpoint on the average, the raw weights kept for an exact resume, and the flag's
//! errors.

use crate::checkpoint::{tmp, StopInEpoch};
use crate::common::{assert_kernel_close, gpu, synthetic};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use wgpu_fmnist::checkpoint::{self, named_tensors};
use wgpu_fmnist::data::Dataset;
use wgpu_fmnist::kernels::optim::average_reference;
use wgpu_fmnist::train::{
    self, report::Silent, PartialConfig, RunOptions, TrainConfig, TrainError,
};

fn dataset() -> Dataset {
    Dataset {
        dir: PathBuf::from("synthetic"),
        train: synthetic(300, 3),
        test: synthetic(100, 4),
    }
}

/// Batch norm (running statistics to average) and dropout, SGD with momentum.
const SPEC: &str =
    "conv(4,3) bn dropout(0.2) relu maxpool(2) flatten linear(16) bn relu linear(10)";

fn config(epochs: usize, batch: usize, ema: Option<f32>) -> TrainConfig {
    config_of(SPEC, epochs, batch, ema)
}

fn config_of(spec: &str, epochs: usize, batch: usize, ema: Option<f32>) -> TrainConfig {
    TrainConfig::resolve(&PartialConfig {
        model: Some(spec.into()),
        epochs: Some(epochs),
        batch_size: Some(batch),
        val: Some(50),
        seed: Some(4),
        lr: Some(0.05),
        momentum: Some(0.9),
        ema,
        ..Default::default()
    })
    .unwrap()
}

/// One step per epoch (250 training images at batch 250): the runs of 1, 2 and 3 epochs
/// save the raw weights after steps 1, 2 and 3, from which the reference average follows;
/// the saved model (and the run's outcome) is that average, and the test figures are the
/// average's.
#[test]
fn the_average_follows_the_raw_weights_of_every_step() {
    follows_the_raw_weights(SPEC, &["0.weight", "1.running_mean", "7.running_var"]);
}

/// Without batch norm there are no statistics to average (a network of weights alone once
/// failed to start averaging).
#[test]
fn a_network_without_batch_norm_averages_its_weights() {
    follows_the_raw_weights(
        "flatten linear(16) relu linear(10)",
        &["1.weight", "3.bias"],
    );
}

/// `changed`: tensors that must differ between the average and the raw weights after 3 steps.
fn follows_the_raw_weights(spec: &str, changed: &[&str]) {
    let data = dataset();
    let decay = 0.6;
    let mut want: Option<std::collections::BTreeMap<String, Vec<f32>>> = None;
    for epochs in 1..=3 {
        let dir = tmp(&format!("ema-steps-{epochs}"));
        let opts = RunOptions {
            run_dir: Some(&dir),
            ..Default::default()
        };
        let cfg = config_of(spec, epochs, 250, Some(decay));
        let out = train::train_with(gpu(), &cfg, &data, &mut Silent, &opts).unwrap();
        let c = checkpoint::load(&dir.join("last.safetensors"), None).unwrap();
        let raw = c.optim.as_ref().unwrap().raw.clone();
        assert_eq!(
            raw.len(),
            named_tensors(&c.spec, &c.params).len(),
            "every tensor"
        );
        // The reference: step 0 copies, then lerp(avg, raw, 1 - decay).
        let step = epochs as u32 - 1;
        let next = match want.take() {
            None => raw.clone(),
            Some(mut avg) => {
                for (name, a) in avg.iter_mut() {
                    average_reference(a, &raw[name], decay, step);
                }
                avg
            }
        };
        let got = named_tensors(&c.spec, &c.params);
        for (name, w) in &next {
            assert_kernel_close(&format!("{name} after step {}", step + 1), &got[name], w);
        }
        if epochs == 3 {
            // Three steps in, the average and the raw weights differ, statistics included.
            for &name in changed {
                assert!(raw[name] != got[name], "{name} is not averaged");
            }
        }
        assert!(out.params == c.params, "the outcome's model is the average");
        // The run's test figures are the average's, as `eval` of the checkpoint gives them.
        let eval = wgpu_fmnist::infer::evaluate(gpu(), &c, &data.test, 250).unwrap();
        assert_eq!(eval.accuracy, out.test_accuracy);
        assert!(
            (eval.loss - out.test_loss).abs() < 1e-6,
            "{} vs {}",
            eval.loss,
            out.test_loss
        );
        let _ = std::fs::remove_dir_all(&dir);
        want = Some(next);
    }
}

/// Interrupted mid-epoch and resumed, an averaged run (evaluated with flip TTA) ends bit for
/// bit where the uninterrupted one does: the average and the raw weights (saved beside it)
/// both resume, and so do the validation and test figures.
#[test]
fn an_averaged_run_resumes_bit_identically() {
    let data = dataset();
    let cfg = TrainConfig {
        tta: wgpu_fmnist::train::config::Tta::Flip,
        ..config(2, 32, Some(0.9))
    };
    let straight_dir = tmp("ema-straight");
    let straight_opts = RunOptions {
        run_dir: Some(&straight_dir),
        ..Default::default()
    };
    let straight = train::train_with(gpu(), &cfg, &data, &mut Silent, &straight_opts).unwrap();
    let dir = tmp("ema-resume");
    let stop = AtomicBool::new(false);
    let opts = RunOptions {
        run_dir: Some(&dir),
        stop: Some(&stop),
        ..Default::default()
    };
    let mut stop_soon = StopInEpoch {
        flag: &stop,
        at: 1,
        epoch: 0,
    };
    assert!(matches!(
        train::train_with(gpu(), &cfg, &data, &mut stop_soon, &opts),
        Err(TrainError::Interrupted { .. })
    ));
    let c = checkpoint::load(&dir.join("last.safetensors"), None).unwrap();
    assert!(
        c.meta.step > 0 && c.meta.step < 16,
        "stopped at step {}",
        c.meta.step
    );
    assert!(
        c.params != c.training_params(),
        "the average and the raw weights are both saved"
    );
    let resumed = train::train_with(
        gpu(),
        &cfg,
        &data,
        &mut Silent,
        &RunOptions {
            run_dir: Some(&dir),
            resume: Some(&c),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        resumed.params == straight.params,
        "the resumed average differs"
    );
    let (a, b) = (
        checkpoint::load(&straight_dir.join("last.safetensors"), None).unwrap(),
        checkpoint::load(&dir.join("last.safetensors"), None).unwrap(),
    );
    assert!(
        a.optim == b.optim,
        "the resumed raw weights or moments differ"
    );
    assert_eq!(resumed.test_accuracy, straight.test_accuracy);
    assert_eq!(resumed.test_loss, straight.test_loss);
    let last_val = |o: &train::TrainOutcome| o.history.last().and_then(|h| h.val_loss);
    assert_eq!(last_val(&resumed), last_val(&straight));
    // Without --ema the same run trains the same raw weights, and evaluates them.
    let plain = train::train(gpu(), &config(2, 32, None), &data, &mut Silent).unwrap();
    assert!(
        plain.params == b.training_params(),
        "--ema changed the training itself"
    );
    for d in [dir, straight_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_bad_decay_is_refused_naming_the_flag() {
    for decay in [1.0, -0.5, 1.5, f32::NAN] {
        let err = TrainConfig::resolve(&PartialConfig {
            model: Some("mlp".into()),
            ema: Some(decay),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--ema") && err.contains("[0, 1)"),
            "{decay}: {err}"
        );
    }
    // 0 is off, so a study can vary ema=0,0.999.
    let off = TrainConfig::resolve(&PartialConfig {
        model: Some("mlp".into()),
        ema: Some(0.0),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(off.ema, None);
}
