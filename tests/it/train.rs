//! Training end to end on the GPU: determinism, learning on synthetic and real data, the
//! CLI's run folder and JSON output, and its errors for impossible flags.

use crate::common::synthetic;
use crate::common::{gpu, real_data};
use std::path::PathBuf;
use std::process::Command;
use wgpu_fmnist::data::Dataset;
use wgpu_fmnist::train::{self, report::Silent, PartialConfig, TrainConfig, Tta};

fn synthetic_dataset() -> Dataset {
    Dataset {
        dir: PathBuf::from("synthetic"),
        train: synthetic(600, 1),
        test: synthetic(200, 2),
    }
}

fn config(model: &str, extra: PartialConfig) -> TrainConfig {
    let base = PartialConfig {
        model: Some(model.into()),
        epochs: Some(1),
        val: Some(100),
        ..Default::default()
    };
    TrainConfig::resolve(&base.overlay(&extra)).unwrap()
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    // regcnn has batch norm and dropout; 500 training images at batch 32 end on a partial
    // batch of 20, so every plan runs.
    let data = synthetic_dataset();
    let cfg = config(
        "regcnn",
        PartialConfig {
            seed: Some(7),
            epochs: Some(2),
            ..Default::default()
        },
    );
    let a = train::train(gpu(), &cfg, &data, &mut Silent).unwrap();
    let b = train::train(gpu(), &cfg, &data, &mut Silent).unwrap();
    assert!(a.params == b.params, "two runs with the same seed differ");
    assert_eq!(
        a.history.iter().map(|h| h.train_loss).collect::<Vec<_>>(),
        b.history.iter().map(|h| h.train_loss).collect::<Vec<_>>()
    );
    let c = train::train(
        gpu(),
        &config(
            "regcnn",
            PartialConfig {
                seed: Some(8),
                epochs: Some(2),
                ..Default::default()
            },
        ),
        &data,
        &mut Silent,
    )
    .unwrap();
    assert!(
        a.params != c.params,
        "a different seed should give different weights"
    );
}

#[test]
fn generic_kernels_train_like_the_automatic_choice() {
    // `--variant generic`: the plain kernels everywhere. Same data, seed and steps as the
    // automatic (subgroup / vec4 on lavapipe) kernels: only f32 summation order differs.
    use wgpu_fmnist::gpu::{AdapterRequest, Gpu, Variant};
    let generic = Gpu::new(&AdapterRequest {
        variant: Variant::Generic,
        ..Default::default()
    })
    .unwrap();
    let data = synthetic_dataset();
    let cfg = config("regcnn", PartialConfig::default());
    let a = train::train(gpu(), &cfg, &data, &mut Silent).unwrap();
    let b = train::train(&generic, &cfg, &data, &mut Silent).unwrap();
    let (la, lb) = (a.history[0].train_loss, b.history[0].train_loss);
    assert!(
        (la - lb).abs() <= 1e-4 * la.abs(),
        "train loss {la} vs {lb}"
    );
    let mut worst = 0f32;
    for (pa, pb) in a.params.iter().zip(&b.params) {
        for (x, y) in pa.weight.iter().zip(&pb.weight) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 1e-4, "weights differ by up to {worst}");
    assert!(
        a.params != b.params,
        "the generic kernels should really have run"
    );
}

#[test]
fn every_optimizer_learns_the_synthetic_task() {
    let data = synthetic_dataset();
    for (opt, lr) in [("sgd", 0.05), ("adam", 1e-3), ("adamw", 1e-3)] {
        let extra: PartialConfig = toml::from_str(&format!(
            "optimizer = \"{opt}\"\nlr = {lr}\nepochs = 3\nmomentum = 0.0"
        ))
        .unwrap();
        let cfg = config("mlp", extra);
        let out = train::train(gpu(), &cfg, &data, &mut Silent).unwrap();
        let losses: Vec<f64> = out.history.iter().map(|h| h.train_loss).collect();
        assert!(
            losses[2] < losses[0],
            "{opt}: loss did not fall: {losses:?}"
        );
        assert!(
            out.test_accuracy > 0.9,
            "{opt}: test accuracy {} on an easy task",
            out.test_accuracy
        );
        assert_eq!(out.history.last().unwrap().step, 3 * 500usize.div_ceil(32));
    }
}

#[test]
fn diverging_run_stops_with_a_clear_error() {
    let data = synthetic_dataset();
    let extra: PartialConfig =
        toml::from_str("optimizer = \"sgd\"\nlr = 1e30\nmomentum = 0.0").unwrap();
    let err = train::train(gpu(), &config("mlp", extra), &data, &mut Silent)
        .err()
        .expect("lr 1e30 must diverge");
    assert!(matches!(err, train::TrainError::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("--lr"), "{err}");
    // A loss that is finite but far too large is divergence too (threshold --max-loss; here
    // below chance level so that the first readback trips it).
    let extra = PartialConfig {
        max_loss: Some(0.5),
        ..Default::default()
    };
    let err = train::train(gpu(), &config("mlp", extra), &data, &mut Silent)
        .err()
        .expect("a running loss above --max-loss must stop the run");
    assert!(
        matches!(err, train::TrainError::Diverged { loss, .. } if loss > 0.5),
        "{err}"
    );
}

#[test]
fn impossible_settings_are_refused() {
    let data = synthetic_dataset();
    let cfg = config(
        "mlp",
        PartialConfig {
            val: Some(600),
            ..Default::default()
        },
    );
    let err = train::train(gpu(), &cfg, &data, &mut Silent)
        .err()
        .expect("val = all training images");
    assert!(err.to_string().contains("--val"), "{err}");
    for (toml, flag) in [
        ("epochs = 0", "--epochs"),
        ("lr = -1.0", "--lr"),
        ("momentum = 1.5", "--momentum"),
        ("batch_size = 0", "--batch-size"),
        ("input_std = nan", "--input-std"),
        ("input_std = 0.0", "--input-std"),
        ("input_mean = inf", "--input-mean"),
        ("lr = nan", "--lr"),
        ("max_loss = -1.0", "--max-loss"),
        ("schedule = \"cosine(warmpu=1)\"", "--schedule"),
        ("schedule = \"plateau\"\nval = 0", "--schedule"),
        ("label_smoothing = 1.0", "--label-smoothing"),
    ] {
        let extra: PartialConfig = toml::from_str(toml).unwrap();
        let err = TrainConfig::resolve(&PartialConfig {
            model: Some("mlp".into()),
            ..extra
        })
        .unwrap_err();
        assert!(err.to_string().contains(flag), "{toml}: {err}");
    }
    // From the CLI: exit 2, the item named.
    let r = Command::new(binary())
        .args(["train", "--model", "mlp", "--schedule", "cosinus(warmup=1)"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("--schedule") && stderr.contains("unknown schedule `cosinus`"),
        "{stderr}"
    );
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wgpu-fmnist")
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpu-fmnist-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn cli_trains_regcnn_on_real_data_well_above_chance() {
    let Some(data) = real_data() else { return };
    let out = out_dir("regcnn");
    let result = Command::new(binary())
        .args([
            "train",
            "--model",
            "regcnn",
            "--epochs",
            "1",
            "--limit-train",
            "2200",
            "--val",
            "200",
            "--limit-test",
            "500",
        ])
        .args(["--lr", "0.01", "--json", "--name", "t"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "train failed: {}\n{stdout}",
        String::from_utf8_lossy(&result.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    let acc = summary["test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.6,
        "test accuracy {acc} after 2,000 images (chance is 0.1)"
    );
    for key in [
        "test_loss",
        "epochs",
        "images_per_second",
        "wall_seconds",
        "adapter",
    ] {
        assert!(!summary[key].is_null(), "summary lacks {key}: {summary}");
    }
    assert_eq!(lines[0]["kind"], "epoch");
    assert!(lines[0]["val_accuracy"].as_f64().unwrap() > 0.5);
    // The run folder holds the resolved configuration and the metrics log.
    let run = out.join("t");
    let cfg: TrainConfig =
        toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(
        cfg.spec,
        wgpu_fmnist::model::resolve("regcnn").unwrap().0.to_text()
    );
    assert_eq!(cfg.lr, 0.01);
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"kind\":\"epoch\""))
            && log.lines().last().unwrap().contains("summary")
    );
    // Reusing an explicit run name is refused rather than overwriting it.
    let again = Command::new(binary())
        .args([
            "train",
            "--model",
            "mlp",
            "--name",
            "t",
            "--limit-train",
            "300",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn cli_reports_bad_flags_and_data_clearly() {
    let out = out_dir("bad");
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let r = run(&["train", "--model", "conv(8,3) linear(10)"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("add `flatten`"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = run(&["train", "--model", "mlp", "--lr", "0"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--lr"));
    // Each refused with exit 2 and a message that says what to do.
    let file = out_dir("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    for (args, says) in [
        (
            vec!["train", "--model", "resnet50"],
            "neither a preset (mlp, cnn1",
        ),
        (
            vec!["train", "--model", "mlp", "--patience", "3", "--val", "0"],
            "needs --val > 0",
        ),
        (
            vec!["train", "--model", "mlp", "--limit-train", "0"],
            "--limit-train",
        ),
        (
            vec!["train", "--model", "mlp", "--target-accuracy", "0.9"],
            "not a percentage in [1, 100]",
        ),
        (
            vec![
                "train",
                "--model",
                "mlp",
                "--target-accuracy",
                "90",
                "--val",
                "0",
            ],
            "--target-accuracy: needs a validation split",
        ),
    ] {
        let r = run(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let r = Command::new(binary())
        .args([
            "train",
            "--model",
            "mlp",
            "--limit-train",
            "300",
            "--val",
            "100",
            "--out",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("is a file, not a folder"), "{err}");
    let empty = out_dir("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let r = Command::new(binary())
        .args(["train", "--model", "mlp", "--data"])
        .arg(&empty)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("train-images-idx3-ubyte"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // A batch whose activations exceed the adapter's storage-binding limit: a clear error
    // naming the buffer and the flag to change, not a lost device.
    if real_data().is_some() {
        // Sized from this adapter's limit (lavapipe 128 MiB: 670 images; SwiftShader 1 GiB:
        // 5,350): vgg's first activations are 64 x 28 x 28 floats an image.
        let limit = gpu().limits.max_storage_buffer_binding_size as usize;
        let batch = (limit / (64 * 28 * 28 * 4) + 1).to_string();
        let images = (limit / (64 * 28 * 28 * 4) + 200).to_string();
        let r = run(&[
            "train",
            "--model",
            "vgg",
            "--batch-size",
            &batch,
            "--limit-train",
            &images,
            "--val",
            "100",
        ]);
        assert_eq!(r.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(
            stderr.contains("needs") && stderr.contains("--batch-size"),
            "{stderr}"
        );
    }
    let r = Command::new(binary())
        .args(["summary", "--model", "vgg"])
        .output()
        .unwrap();
    assert!(r.status.success() && String::from_utf8_lossy(&r.stdout).contains("128x7x7"));
}

#[test]
fn a_closed_output_pipe_does_not_stop_training() {
    // `train --json | head -1`: the reader goes away after the first line; training must
    // finish, save its checkpoints and the summary, and exit 0.
    let Some(data) = real_data() else { return };
    let out = out_dir("pipe");
    let mut child = Command::new(binary())
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "3",
            "--limit-train",
            "1500",
        ])
        .args([
            "--val",
            "200",
            "--limit-test",
            "200",
            "--json",
            "--name",
            "p",
        ])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"kind\":\"epoch\""), "{first}");
    drop(lines); // closes the pipe: later writes fail with EPIPE
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after the reader went away"
    );
    let log = std::fs::read_to_string(out.join("p/metrics.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"kind\":\"summary\""));
    // Each epoch record carries the device memory at its end: the same every epoch.
    let memory: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "epoch")
        .map(|v| v["gpu_memory"].clone())
        .collect();
    assert_eq!(memory.len(), 3);
    assert!(
        memory[0]["allocated_bytes"].as_u64().unwrap() > 0,
        "{memory:?}"
    );
    assert!(memory.iter().all(|m| *m == memory[0]), "{memory:?}");
    let c = wgpu_fmnist::checkpoint::load(&out.join("p/last.safetensors"), None).unwrap();
    assert_eq!(c.meta.epoch, 3);
}

#[test]
fn a_batch_larger_than_the_data_is_lowered_shown_and_stored() {
    let Some(data) = real_data() else { return };
    let out = out_dir("big-batch");
    let r = Command::new(binary())
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--batch-size",
            "500",
        ])
        .args(["--limit-train", "100", "--val", "10", "--limit-test", "50"])
        .args(["--name", "b", "--data"])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    assert!(
        stderr.contains("--batch-size 500 is more than the 90 training images")
            && stderr.contains("batch 90, 1 steps per epoch"),
        "{stderr}"
    );
    let cfg: TrainConfig =
        toml::from_str(&std::fs::read_to_string(out.join("b/config.toml")).unwrap()).unwrap();
    assert_eq!(cfg.batch_size, 90);
}

#[test]
fn ablate_trains_every_combination_and_compares_them() {
    let Some(data) = real_data() else { return };
    let out = out_dir("ablate");
    let r = Command::new(binary())
        .args([
            "ablate",
            "--model",
            "regcnn",
            "--epochs",
            "1",
            "--limit-train",
            "600",
        ])
        .args([
            "--val",
            "100",
            "--limit-test",
            "100",
            "--quiet",
            "--name",
            "study",
        ])
        .args([
            "--vary",
            "dropout=0,0.3",
            "--vary",
            "schedule=constant,step(every=1,gamma=0.5)",
        ])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&r.stderr)
    );
    let study = out.join("study");
    for label in [
        "dropout=0 schedule=constant",
        "dropout=0 schedule=step(every=1,gamma=0.5)",
        "dropout=0.3 schedule=constant",
        "dropout=0.3 schedule=step(every=1,gamma=0.5)",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}:\n{stdout}"));
        assert!(row.contains('%'), "{row}");
        let cfg: TrainConfig = toml::from_str(
            &std::fs::read_to_string(study.join(label.replace(' ', "_")).join("config.toml"))
                .unwrap(),
        )
        .unwrap();
        // Varying dropout keeps the preset's recipe (SGD, momentum 0.9, L2 1e-3).
        assert_eq!((cfg.momentum, cfg.weight_decay), (0.9, 0.001), "{label}");
        assert!(cfg.spec.contains(if label.contains("0.3") {
            "dropout(0.3)"
        } else {
            "dropout(0)"
        }));
    }
    let page = std::fs::read_to_string(study.join("compare.html")).unwrap();
    assert!(page.contains("dropout=0.3_schedule=step(every=1,gamma=0.5)"));
    // The model column names the preset, not the rewritten spec.
    assert!(page.contains(">regcnn (dropout 0.3/0.3)<"), "model label");
    // A study that exists already, and a setting that does not exist: exit 2, named.
    for (vary, says) in [
        ("lr=0.1", "exists already"),
        ("lrr=0.1", "`lrr` is not a training setting"),
    ] {
        let r = Command::new(binary())
            .args([
                "ablate", "--model", "mlp", "--name", "study", "--vary", vary, "--data",
            ])
            .arg(data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn ablate_one_at_a_time_changes_each_setting_alone() {
    let Some(data) = real_data() else { return };
    let out = out_dir("ablate-each");
    let r = Command::new(binary())
        .args([
            "ablate",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--limit-train",
            "600",
        ])
        .args([
            "--val",
            "100",
            "--limit-test",
            "100",
            "--quiet",
            "--one-at-a-time",
        ])
        .args([
            "--vary", "lr=0.01", "--vary", "tta=flip", "--name", "each", "--data",
        ])
        .arg(data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains('%'))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ["baseline", "lr=0.01", "tta=flip"], "{stdout}");
    let cfg = |name: &str| -> TrainConfig {
        let path = out.join("each").join(name).join("config.toml");
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    // mlp's Adam 1e-3 and no TTA, except where a run changes one of them.
    assert_eq!((cfg("baseline").lr, cfg("baseline").tta), (1e-3, Tta::None));
    assert_eq!((cfg("lr=0.01").lr, cfg("lr=0.01").tta), (0.01, Tta::None));
    assert_eq!((cfg("tta=flip").lr, cfg("tta=flip").tta), (1e-3, Tta::Flip));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn trainings_on_threads_sharing_one_device_all_finish() {
    // Several runs share one device, as the tests do: a thread's device poll can collect
    // another run's metrics-map callback and fire it a little later, so a run must wait for
    // its own callbacks rather than expect them the moment its submission is done (this
    // failed about one run in 25 before that fix; readback.rs tests the wait itself).
    let data = std::sync::Arc::new(synthetic_dataset());
    let runs: Vec<_> = (0..4u64)
        .map(|seed| {
            let data = data.clone();
            std::thread::spawn(move || {
                let cfg = config(
                    "mlp",
                    PartialConfig {
                        seed: Some(seed),
                        epochs: Some(3),
                        ..Default::default()
                    },
                );
                train::train(gpu(), &cfg, &data, &mut Silent)
            })
        })
        .collect();
    for (seed, run) in runs.into_iter().enumerate() {
        let out = run.join().expect("training thread panicked");
        let out = out.unwrap_or_else(|e| panic!("run with seed {seed}: {e}"));
        assert_eq!(out.history.len(), 3);
        assert!(
            out.test_accuracy > 0.8,
            "seed {seed}: {}",
            out.test_accuracy
        );
    }
}

#[test]
fn a_run_that_does_not_fit_in_device_memory_is_refused_before_allocating() {
    // Every tensor of vgg at batch 64 fits in one binding; together they do not fit in a
    // GPU of 64 MiB (activations and gradients alone are 2 x 64 x ~1.8 MB).
    use wgpu_fmnist::gpu::{AdapterRequest, Gpu, GpuError};
    let mut small = Gpu::new(&AdapterRequest::default()).unwrap();
    small.device_memory = Some(64 << 20);
    let data = synthetic_dataset();
    let before = small.memory();
    let cfg = config(
        "vgg",
        PartialConfig {
            batch_size: Some(64),
            eval_batch_size: Some(16),
            ..Default::default()
        },
    );
    let err = match train::train(&small, &cfg, &data, &mut Silent) {
        Err(train::TrainError::Gpu(e)) => e,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("trained in 64 MiB"),
    };
    let text = err.to_string();
    assert!(
        matches!(
            err,
            GpuError::OutOfDeviceMemory {
                flag: "--batch-size",
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("64 MiB") && text.contains("--batch-size") && text.contains("activations"),
        "{text}"
    );
    assert_eq!(small.memory(), before, "allocated before refusing");
    // The estimate behind it: over 64 MiB, far under what any GPU has.
    let (spec, _) = wgpu_fmnist::model::resolve("vgg").unwrap();
    let need = wgpu_fmnist::net::MemoryNeed::of(&spec, 64, 200, 0);
    assert!(need.train_batch > 64 << 20, "{need:?}");
    assert!(need.total() < 2 << 30, "{need:?}");
}
