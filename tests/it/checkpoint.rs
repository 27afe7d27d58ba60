//! Checkpoints: save/reload round trip, exact resume (also after an interruption mid-epoch),
//! PyTorch interchange, eval/predict from the CLI, and the errors for bad files and images.

use crate::common::{gpu, synthetic};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use wgpu_fmnist::checkpoint;
use wgpu_fmnist::data::Dataset;
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

/// Small, but with every stateful piece: batch norm, dropout (RNG by step), Adam (step count).
const SPEC: &str =
    "conv(4,3) bn dropout(0.3) relu maxpool(2) flatten linear(16) bn relu linear(10)";

fn config(epochs: usize) -> TrainConfig {
    let p = PartialConfig {
        model: Some(SPEC.into()),
        epochs: Some(epochs),
        batch_size: Some(32),
        val: Some(50),
        optimizer: Some(wgpu_fmnist::model::OptimizerKind::Adam),
        seed: Some(11),
        ..Default::default()
    };
    TrainConfig::resolve(&p).unwrap()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpu-fmnist-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn saved_checkpoint_reloads_with_identical_weights_and_logits() {
    let dir = tmp("roundtrip");
    let data = dataset();
    let out = train::train_with(
        gpu(),
        &config(1),
        &data,
        &mut Silent,
        &RunOptions {
            run_dir: Some(&dir),
            ..Default::default()
        },
    )
    .unwrap();
    let c = checkpoint::load(&dir.join("last.safetensors"), None).unwrap();
    assert!(
        c.params == out.params,
        "reloaded parameters differ from the trained ones"
    );
    // Non-finite weights or normalisation (a diverged model, a damaged file) are refused by
    // name instead of evaluating to a NaN loss.
    let mut bad = c.clone();
    bad.params[0].weight[3] = f32::NAN;
    checkpoint::save(&dir.join("nan.safetensors"), &bad).unwrap();
    let err = checkpoint::load(&dir.join("nan.safetensors"), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("`0.weight` holds a non-finite value"),
        "{err}"
    );
    let mut bad = c.clone();
    bad.meta.input_std = f32::INFINITY;
    checkpoint::save(&dir.join("std.safetensors"), &bad).unwrap();
    let err = checkpoint::load(&dir.join("std.safetensors"), None).unwrap_err();
    assert!(err.to_string().contains("input_std"), "{err}");
    assert_eq!(
        c.spec.to_text(),
        wgpu_fmnist::model::ModelSpec::parse(SPEC)
            .unwrap()
            .to_text()
    );
    assert_eq!((c.meta.epoch, c.meta.step, c.meta.step_in_epoch), (1, 8, 0));
    assert!(dir.join("best.safetensors").is_file());
    // Same logits from the trained weights and from the file.
    let images: Vec<Vec<u8>> = (0..5)
        .map(|i| data.test.images.pixels[i * 784..(i + 1) * 784].to_vec())
        .collect();
    let from_file = wgpu_fmnist::infer::predict(gpu(), &c, &images, false).unwrap();
    let trained = checkpoint::Checkpoint {
        params: out.params.clone(),
        ..c.clone()
    };
    assert_eq!(
        from_file,
        wgpu_fmnist::infer::predict(gpu(), &trained, &images, false).unwrap()
    );
    // Saving the loaded checkpoint again and loading that gives the same checkpoint.
    let again =
        checkpoint::from_bytes(Path::new("again"), &checkpoint::to_bytes(&c).unwrap(), None)
            .unwrap();
    assert!(again.params == c.params && again.meta == c.meta && again.optim == c.optim);
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let data = dataset();
    let straight = train::train(gpu(), &config(2), &data, &mut Silent).unwrap();

    // 1 epoch, then resume for the second.
    let dir = tmp("resume");
    let opts = RunOptions {
        run_dir: Some(&dir),
        ..Default::default()
    };
    train::train_with(gpu(), &config(1), &data, &mut Silent, &opts).unwrap();
    let c = checkpoint::load(&dir.join("last.safetensors"), None).unwrap();
    assert!(
        c.optim.as_ref().is_some_and(|o| !o.m2.is_empty()),
        "Adam moments are saved"
    );
    let resumed = train::train_with(
        gpu(),
        &config(2),
        &data,
        &mut Silent,
        &RunOptions {
            resume: Some(&c),
            ..opts
        },
    )
    .unwrap();
    assert!(
        resumed.params == straight.params,
        "1 epoch + resume + 1 epoch differs from 2 epochs"
    );
}

#[test]
fn interrupted_run_saves_and_resumes_exactly() {
    let data = dataset();
    let straight = train::train(gpu(), &config(2), &data, &mut Silent).unwrap();
    let dir = tmp("interrupt");
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
    match train::train_with(gpu(), &config(2), &data, &mut stop_soon, &opts) {
        Err(TrainError::Interrupted { saved }) => assert_eq!(saved, dir.join("last.safetensors")),
        other => panic!(
            "expected an interruption, got {:?}",
            other.map(|o| o.epochs_run)
        ),
    }
    let c = checkpoint::load(&dir.join("last.safetensors"), None).unwrap();
    assert!(
        c.meta.step > 0 && c.meta.step < 16,
        "stopped mid-run at step {}",
        c.meta.step
    );
    let resumed = train::train_with(
        gpu(),
        &config(2),
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
        "interrupted + resumed run differs from the uninterrupted one"
    );
}

/// Sets the stop flag at the first progress report of epoch `at`: the run stops there.
pub struct StopInEpoch<'a> {
    pub flag: &'a AtomicBool,
    pub at: usize,
    pub epoch: usize,
}

impl train::Reporter for StopInEpoch<'_> {
    fn start(
        &mut self,
        _: &TrainConfig,
        _: &wgpu_fmnist::model::ModelSpec,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) {
    }
    fn epoch_start(&mut self, epoch: usize, _: usize) {
        self.epoch = epoch;
    }
    fn progress(&mut self, _: &train::Progress) {
        if self.epoch == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
    fn epoch_end(&mut self, _: &train::EpochRecord) {}
    fn message(&mut self, _: &str) {}
}

#[test]
fn scheduled_and_augmented_runs_resume_exactly() {
    // A per-step schedule (cosine with warmup) and one decided between epochs from the
    // validation loss (plateau; threshold 0.9 counts almost nothing as an improvement, so
    // it halves the rate after most epochs): stopped after two epochs and resumed, each equals
    // the uninterrupted run bit for bit.
    let data = dataset();
    for schedule in [
        "cosine(warmup=0.5)",
        "plateau(factor=0.5,patience=0,threshold=0.9)",
    ] {
        let cfg = TrainConfig::resolve(&PartialConfig {
            model: Some(SPEC.into()),
            epochs: Some(4),
            batch_size: Some(32),
            val: Some(50),
            seed: Some(5),
            schedule: Some(schedule.into()),
            // Augmentation draws from the step counter too: resumed, it must redraw the same.
            augment: Some("affine(rotate=10,translate=0.1) perspective(0.3) flip noise(0.05) blur(k=3) erase(p=0.5)".into()),
            ..Default::default()
        })
        .unwrap();
        let straight = train::train(gpu(), &cfg, &data, &mut Silent).unwrap();
        let lrs: Vec<f64> = straight.history.iter().map(|h| h.lr).collect();
        assert!(
            lrs.windows(2).all(|w| w[1] <= w[0]) && lrs[3] < lrs[1] / 1.9,
            "{schedule}: the rate falls: {lrs:?}"
        );
        let dir = tmp("schedule");
        let stop = AtomicBool::new(false);
        let opts = RunOptions {
            run_dir: Some(&dir),
            stop: Some(&stop),
            ..Default::default()
        };
        let mut reporter = StopInEpoch {
            flag: &stop,
            at: 3,
            epoch: 0,
        };
        assert!(matches!(
            train::train_with(gpu(), &cfg, &data, &mut reporter, &opts),
            Err(TrainError::Interrupted { .. })
        ));
        let c = checkpoint::load(&dir.join("last.safetensors"), None).unwrap();
        // The flag is seen at the next chunk boundary: in epoch 3 or at the start of 4.
        assert!(
            (2..=3).contains(&c.meta.epoch),
            "{schedule}: stopped after {:?}",
            c.meta
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
            "{schedule}: interrupted + resumed differs from the uninterrupted run"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_gpu_steps_with_the_scheduled_rate() {
    // multistep(at=1, gamma=1e-20): after epoch 1 every update is far below the weights'
    // last bit, so 2 epochs end with exactly the weights of 1 constant-rate epoch. Plain
    // SGD, no batch norm: nothing else changes the parameters.
    let data = dataset();
    let cfg = |epochs: usize, schedule: &str| {
        TrainConfig::resolve(&PartialConfig {
            model: Some("flatten linear(16) relu linear(10)".into()),
            epochs: Some(epochs),
            optimizer: Some(wgpu_fmnist::model::OptimizerKind::Sgd),
            lr: Some(0.05),
            val: Some(50),
            schedule: Some(schedule.into()),
            ..Default::default()
        })
        .unwrap()
    };
    let one = train::train(gpu(), &cfg(1, "constant"), &data, &mut Silent).unwrap();
    let two = train::train(
        gpu(),
        &cfg(2, "multistep(at=1,gamma=1e-20)"),
        &data,
        &mut Silent,
    )
    .unwrap();
    assert!(
        one.params == two.params,
        "the second epoch moved the weights"
    );
    assert_eq!(two.history[0].lr, 0.05f32 as f64);
    assert!(two.history[1].lr < 1e-20);
    let unscheduled = train::train(gpu(), &cfg(2, "constant"), &data, &mut Silent).unwrap();
    assert!(one.params != unscheduled.params);
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wgpu-fmnist")
}

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

#[test]
fn pytorch_state_dict_evaluates_like_pytorch() {
    // tests/fixtures/mlp_pytorch.safetensors: an mlp state dict written by PyTorch's
    // safetensors (no metadata); tools/pytorch_compat.py measured 0.8563 test accuracy.
    let data = Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if !data.is_dir() {
        eprintln!("skipped: no real data");
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlp_pytorch.safetensors");
    let r = Command::new(binary())
        .args(["eval", "--model", "mlp", "--json", "--checkpoint"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(
        (v["accuracy"].as_f64().unwrap() - 0.8563).abs() < 1e-4,
        "{v}"
    );
    assert_eq!(v["confusion"].as_array().unwrap().len(), 10);
    assert_eq!(v["per_class"][1]["support"], 1000);
    // Without --model there is no way to know the network: a clear error.
    let r = Command::new(binary())
        .args(["eval", "--checkpoint"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--model"));
    // The wrong model names the first tensor that does not fit.
    let r = Command::new(binary())
        .args(["eval", "--model", "regcnn", "--checkpoint"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("`0.weight`"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn cli_trains_then_predicts_the_sample_images() {
    let data = Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if !data.is_dir() {
        eprintln!("skipped: no real data");
        return;
    }
    let out = tmp("predict");
    let r = Command::new(binary())
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--limit-train",
            "20000",
            "--limit-test",
            "1000",
            "--json",
            "--name",
            "p",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let trained_accuracy = test_accuracy(&r.stdout);
    let ckpt = out.join("p/last.safetensors");
    init_starts_from_the_checkpoint(&out, &ckpt, trained_accuracy);
    let files = ["trouser", "bag", "bag-on-white", "sneaker", "sandal"];
    let r = Command::new(binary())
        .args(["predict", "--json", "--checkpoint"])
        .arg(&ckpt)
        .args(files.iter().map(|f| assets().join(format!("{f}.png"))))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want = ["Trouser", "Bag", "Bag", "Sneaker", "Sandal"];
    for (line, (file, class)) in String::from_utf8_lossy(&r.stdout)
        .lines()
        .zip(files.iter().zip(want))
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["top"][0]["class"], class, "{file}: {v}");
    }
    // eval of the same checkpoint works and reports per-class figures.
    let r = Command::new(binary())
        .args(["eval", "--checkpoint"])
        .arg(&ckpt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success() && text.contains("precision") && text.contains("Ankle boot"),
        "{text}"
    );
    // One unreadable image among good ones: the others are still predicted, the bad one
    // is named, and the exit status says something failed.
    let r = Command::new(binary())
        .args(["predict", "--checkpoint"])
        .arg(&ckpt)
        .arg(assets().join("bag.png"))
        .arg(out.join("missing.png"))
        .arg(assets().join("sandal.png"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr),
    );
    assert_eq!(r.status.code(), Some(6), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.contains("bag.png") && stdout.contains("sandal.png"),
        "{stdout}"
    );
    assert!(
        stderr.contains("missing.png") && stderr.contains("1 of 3 images"),
        "{stderr}"
    );
}

fn test_accuracy(json_lines: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(json_lines);
    let summary = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {text}"));
    summary["test_accuracy"].as_f64().unwrap()
}

/// `--init`: a run that starts from a trained checkpoint and barely moves (lr 1e-9) tests
/// like the checkpoint; a checkpoint of other layers is refused before a folder exists.
fn init_starts_from_the_checkpoint(out: &Path, ckpt: &Path, trained_accuracy: f64) {
    assert!(trained_accuracy > 0.7, "{trained_accuracy}");
    let train = |model: &str, name: &str| {
        Command::new(binary())
            .args(["train", "--model", model, "--epochs", "1", "--lr", "1e-9"])
            .args(["--limit-train", "640", "--val", "0", "--limit-test", "1000"])
            .args(["--json", "--name", name, "--init"])
            .arg(ckpt)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let r = train("mlp", "from-p");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let accuracy = test_accuracy(&r.stdout);
    assert!(
        (accuracy - trained_accuracy).abs() <= 0.002,
        "started from a {trained_accuracy} checkpoint, tests at {accuracy}"
    );
    let config = std::fs::read_to_string(out.join("from-p/config.toml")).unwrap();
    assert!(
        config.contains(&format!(
            "init = {:?}",
            ckpt.canonicalize().unwrap().display().to_string()
        )),
        "{config}"
    );
    let r = train("cnn1", "wrong-layers");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("--init")
            && stderr.contains("last.safetensors")
            && stderr.contains("conv(32,3"),
        "{stderr}"
    );
    assert!(!out.join("wrong-layers").exists());
}

#[test]
fn bad_checkpoints_and_images_are_clear_errors() {
    let dir = tmp("bad");
    // Not a safetensors file.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"this is not a checkpoint").unwrap();
    let err = checkpoint::load(&junk, None).unwrap_err();
    assert!(
        matches!(err, checkpoint::CheckpointError::Format { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("junk.safetensors"));
    // A truncated checkpoint.
    let good = dir.join("good.safetensors");
    train::train_with(
        gpu(),
        &config(1),
        &dataset(),
        &mut Silent,
        &RunOptions {
            run_dir: Some(&dir),
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::rename(dir.join("last.safetensors"), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    assert!(matches!(
        checkpoint::load(&cut, None),
        Err(checkpoint::CheckpointError::Format { .. })
    ));
    // A checkpoint of another model.
    let (mlp, _) = wgpu_fmnist::model::resolve("mlp").unwrap();
    let err = checkpoint::load(&good, Some(&mlp)).unwrap_err();
    assert!(
        err.to_string().contains("not `flatten linear(128)"),
        "{err}"
    );
    // From the CLI: exit code 6 and the file named.
    let r = Command::new(binary())
        .args(["eval", "--checkpoint"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cut.safetensors"));
    let not_image = dir.join("notes.png");
    std::fs::write(&not_image, b"plain text, not a PNG").unwrap();
    let r = Command::new(binary())
        .args(["predict", "--checkpoint"])
        .arg(&good)
        .arg(&not_image)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("notes.png") && stderr.contains("not an image"),
        "{stderr}"
    );
    let r = Command::new(binary())
        .args(["predict", "--checkpoint"])
        .arg(&good)
        .arg(dir.join("missing.png"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(6));
}

/// Starts a 3-epoch mlp run into `out/name`, sends `signal` once training is under way, and
/// returns the exit code and the rest of stderr.
fn train_then_signal(out: &Path, name: &str, signal: &str) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new(binary())
        .args([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "3",
            "--limit-train",
            "30000",
        ])
        .args(["--limit-test", "500", "--name", name])
        .arg("--out")
        .arg(out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (the run folder line comes just before it).
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    for line in lines.by_ref() {
        if line.unwrap().starts_with("training mlp") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    (child.wait().unwrap().code(), rest)
}

#[test]
fn ctrl_c_saves_last_and_exits_130_then_resume_finishes() {
    let data = Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if !data.is_dir() {
        eprintln!("skipped: no real data");
        return;
    }
    let out = tmp("sigint");
    let (code, rest) = train_then_signal(&out, "c", "-INT");
    assert_eq!(code, Some(130), "exit code after Ctrl-C; stderr: {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted") && l.contains("last.safetensors")),
        "{rest:?}"
    );
    let c = checkpoint::load(&out.join("c/last.safetensors"), None).unwrap();
    assert!(c.meta.step > 0 && c.meta.epoch < 3);
    // Resume finishes the run.
    let r = Command::new(binary())
        .arg("train")
        .arg("--resume")
        .arg(out.join("c"))
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let done = checkpoint::load(&out.join("c/last.safetensors"), None).unwrap();
    assert_eq!(done.meta.epoch, 3);
    // Resuming a finished run says how to go further.
    let r = Command::new(binary())
        .arg("train")
        .arg("--resume")
        .arg(out.join("c"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--epochs"));
    // A resumed config.toml is validated like flags, before anything in the folder changes.
    let cfg_path = out.join("c/config.toml");
    let edited = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("lr = ") {
                "lr = -1.0"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg_path, &edited).unwrap();
    let before = std::fs::read(out.join("c/last.safetensors")).unwrap();
    let r = Command::new(binary())
        .args(["train", "--epochs", "4", "--resume"])
        .arg(out.join("c"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("--lr") && err.contains("config.toml"), "{err}");
    assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), edited);
    assert!(std::fs::read(out.join("c/last.safetensors")).unwrap() == before);
    // A new run that cannot start leaves no folder behind, so its name stays free.
    let r = Command::new(binary())
        .args(["train", "--model", "mlp", "--val", "70000", "--name", "f"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--val"));
    assert!(
        !out.join("f").exists(),
        "a failed start left its run folder"
    );
}

#[test]
fn sigterm_saves_last_and_exits_like_ctrl_c() {
    // kill, systemd, Slurm and Docker stop a job with SIGTERM: the partial epoch is saved.
    let data = Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if !data.is_dir() {
        eprintln!("skipped: no real data");
        return;
    }
    let out = tmp("sigterm");
    let (code, rest) = train_then_signal(&out, "t", "-TERM");
    assert_eq!(code, Some(130), "{rest:?}");
    let c = checkpoint::load(&out.join("t/last.safetensors"), None).unwrap();
    assert!(c.meta.step > 0 && c.meta.epoch < 3, "{:?}", c.meta);
}

#[test]
fn a_failed_checkpoint_write_is_a_runtime_error() {
    // Root ignores permissions, so the write is made to fail another way: once training is
    // under way, `last.safetensors` becomes a non-empty folder the save cannot replace.
    let data = Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if !data.is_dir() {
        eprintln!("skipped: no real data");
        return;
    }
    let out = tmp("write-fails");
    let mut child = Command::new(binary())
        .args(["train", "--model", "mlp", "--epochs", "1"])
        .args([
            "--limit-train",
            "6000",
            "--limit-test",
            "100",
            "--name",
            "w",
        ])
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    for line in lines.by_ref() {
        if line.unwrap().starts_with("training mlp") {
            break;
        }
    }
    std::fs::create_dir_all(out.join("w/last.safetensors/in-the-way")).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(1), "a failed save is a runtime error: {rest:?}");
    let error = rest
        .iter()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        error.contains("last.safetensors") && error.contains("could not save"),
        "{error}"
    );
    // The folder in the way is untouched and no temporary file is left beside it.
    assert!(out.join("w/last.safetensors/in-the-way").is_dir());
    let names: Vec<String> = std::fs::read_dir(out.join("w"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn resume_continues_with_the_recorded_kernels_under_another_kernel_order() {
    // A run started with one kernel order (WGPU_FMNIST_TUNE=0: select's fixed order) and
    // resumed under another (a kernel cache that says `generic` for every shape) continues
    // with the variants in its kernel-choices.json: bit-identical to the uninterrupted run.
    // Without the record the same resume differs, so the record is what makes it exact.
    let data = Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if !data.is_dir() {
        eprintln!("skipped: no real data");
        return;
    }
    let root =
        std::env::temp_dir().join(format!("wgpu-fmnist-kernel-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let train = |name: &str, epochs: &str, resume: bool, env: &[(&str, &Path)]| {
        let mut cmd = Command::new(binary());
        cmd.arg("train");
        if resume {
            cmd.arg("--resume").arg(root.join(name));
        } else {
            cmd.args(["--model", "mlp", "--limit-train", "1200", "--val", "200"])
                .args(["--limit-test", "100", "--name", name])
                .arg("--data")
                .arg(data)
                .arg("--out")
                .arg(&root);
        }
        cmd.args(["--epochs", epochs, "--quiet"]);
        cmd.env_remove("WGPU_FMNIST_TUNE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let r = cmd.output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        checkpoint::load(&root.join(name).join("last.safetensors"), None)
            .unwrap()
            .params
    };
    let fixed: &[(&str, &Path)] = &[("WGPU_FMNIST_TUNE", Path::new("0"))];
    let whole = train("whole", "2", false, fixed);
    train("resumed", "1", false, fixed);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("resumed/kernel-choices.json")).unwrap(),
    )
    .unwrap();
    let choices = record["choices"].as_object().unwrap();
    assert!(!choices.is_empty(), "{record}");
    // Another kernel order: a cache that holds `generic` for every shape this run chose.
    let cache = root.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let generic: serde_json::Map<String, serde_json::Value> = choices
        .keys()
        .map(|k| (k.clone(), "generic".into()))
        .collect();
    assert!(
        choices.values().any(|v| v != "generic"),
        "the fixed order must differ from the cache's for this test to mean anything: {record}"
    );
    let adapter = record["adapter"].as_str().unwrap();
    let file = serde_json::json!({"format": 3, "adapters": {adapter: generic}, "recent": {}});
    std::fs::write(cache.join("kernel-choices-v3.json"), file.to_string()).unwrap();
    let copy = |from: &str, to: &str| {
        std::fs::create_dir_all(root.join(to)).unwrap();
        for e in std::fs::read_dir(root.join(from)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), root.join(to).join(e.file_name())).unwrap();
        }
    };
    copy("resumed", "unrecorded");
    std::fs::remove_file(root.join("unrecorded/kernel-choices.json")).unwrap();
    let tuned: &[(&str, &Path)] = &[("WGPU_FMNIST_CACHE_DIR", &cache)];
    let resumed = train("resumed", "2", true, tuned);
    assert!(
        resumed == whole,
        "the resumed run differs from the uninterrupted one"
    );
    let unrecorded = train("unrecorded", "2", true, tuned);
    assert!(
        unrecorded != whole,
        "without the record the other kernel order should have changed the last bits"
    );
    let _ = std::fs::remove_dir_all(&root);
}
