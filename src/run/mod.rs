//! A training run as the CLI starts it, in a run folder on disk: a new one (numbered when
//! the name is the default), or one being resumed, whose configuration is validated exactly
//! like flags before anything in the folder changes. At its end the run writes its test-set
//! report and report.html. `console` is how it reports while it trains (with
//! `metrics.jsonl`, which has one writer, `MetricsLog`); `ablate` runs studies of many runs.

pub mod ablate;
pub mod console;

pub use console::{ConsoleReporter, MetricsLog, Output};

use crate::checkpoint::{self, Checkpoint};
use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::train::{ConfigError, PartialConfig, TrainConfig};
use crate::train::{Reporter, RunOptions, TrainError, TrainOutcome};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A run about to start: its resolved configuration, its folder, and the checkpoint it
/// resumes from. Nothing is created on disk until `create` (so a run that cannot start,
/// for want of data or a GPU, leaves nothing behind).
pub struct RunSetup {
    pub cfg: TrainConfig,
    /// `Some` for a resumed run (the folder exists already).
    pub resume: Option<(PathBuf, Checkpoint)>,
    /// The name was given (`--name` or the config file): an existing folder is an error
    /// rather than a reason to number the new one.
    explicit_name: bool,
}

impl RunSetup {
    /// A new run: `file` (from `--config`) under `flags`, over the preset's defaults.
    pub fn new(file: Option<&Path>, flags: &PartialConfig) -> Result<RunSetup, ConfigError> {
        let file = match file {
            Some(path) => PartialConfig::from_file(path)?,
            None => PartialConfig::default(),
        };
        let explicit_name = flags.name.is_some() || file.name.is_some();
        let mut cfg = TrainConfig::resolve(&file.overlay(flags))?;
        // Stored in config.toml: the full path says where the weights came from from any
        // folder (a path that does not resolve stays as given and fails when read).
        cfg.init = cfg.init.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
        Ok(RunSetup {
            cfg,
            resume: None,
            explicit_name,
        })
    }

    /// A run of an ablation study: its configuration is resolved already and its folder
    /// name is fixed (a taken name is an error, not numbered).
    pub fn for_study(cfg: TrainConfig) -> RunSetup {
        RunSetup {
            cfg,
            resume: None,
            explicit_name: true,
        }
    }

    /// Resuming `dir`: its config.toml with only the settings a resume may change taken
    /// from `flags` (epochs, adapter and kernel choice), validated like flags, and its
    /// last.safetensors.
    pub fn resume(
        dir: &Path,
        flags: &PartialConfig,
        config_file_given: bool,
    ) -> Result<RunSetup, crate::train::TrainError> {
        let bad = |m: String| ConfigError::Invalid {
            flag: "--resume",
            message: m,
        };
        let changed = PartialConfig {
            epochs: None,
            backend: None,
            adapter: None,
            software: None,
            variant: None,
            ..flags.clone()
        };
        if changed != PartialConfig::default() || config_file_given {
            return Err(bad("a resumed run keeps its configuration; only --epochs, --json/--quiet, the adapter flags and --variant may be given".into()).into());
        }
        let path = dir.join("config.toml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let mut cfg = TrainConfig::from_run_toml(&text)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        cfg.epochs = flags.epochs.unwrap_or(cfg.epochs);
        cfg.backend = flags.backend.unwrap_or(cfg.backend);
        cfg.adapter = flags.adapter.clone().or(cfg.adapter);
        cfg.software = flags.software.unwrap_or(cfg.software);
        cfg.variant = flags.variant.unwrap_or(cfg.variant);
        cfg.validate()
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let ckpt = checkpoint::load(&dir.join("last.safetensors"), None)?;
        if ckpt.meta.epoch >= cfg.epochs && ckpt.meta.step_in_epoch == 0 {
            return Err(bad(format!(
                "{} already finished its {} epochs; pass --epochs N to train further",
                dir.display(),
                ckpt.meta.epoch
            ))
            .into());
        }
        Ok(RunSetup {
            cfg,
            resume: Some((dir.to_path_buf(), ckpt)),
            explicit_name: true,
        })
    }

    /// Lowers a `--batch-size` larger than the training split to the split's size, as
    /// training would, so that what is shown and stored in config.toml is what runs. Returns
    /// a note saying so.
    pub fn fit_batch_to(&mut self, data: &Dataset) -> Option<String> {
        let cfg = &mut self.cfg;
        let available = match cfg.limit_train {
            0 => data.train.len(),
            n => n.min(data.train.len()),
        };
        let train = available.saturating_sub(cfg.val);
        (train > 0 && cfg.batch_size > train).then(|| {
            let note = format!(
                "note: --batch-size {} is more than the {train} training images; training with batches of {train}",
                cfg.batch_size
            );
            cfg.batch_size = train;
            note
        })
    }

    /// Creates the run folder (or, resuming, uses the existing one), writes the resolved
    /// config.toml and opens metrics.jsonl.
    pub fn create(&self) -> Result<(PathBuf, MetricsLog), ConfigError> {
        let dir = match &self.resume {
            Some((dir, _)) => dir.clone(),
            None => new_run_dir(&self.cfg, self.explicit_name)?,
        };
        let io = |path: &Path, e: std::io::Error| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let config = dir.join("config.toml");
        crate::fsutil::write_atomic(&config, self.cfg.to_toml().as_bytes())
            .map_err(|e| io(&config, e))?;
        let log = MetricsLog::open(&dir.join("metrics.jsonl"), self.resume.is_some())
            .map_err(|e| io(&dir.join("metrics.jsonl"), e))?;
        Ok((dir, log))
    }
}

impl RunSetup {
    /// Creates the folder and trains, reporting on the console as `output` says and into
    /// metrics.jsonl, with Ctrl-C handling. A new run that fails before its first
    /// checkpoint removes its folder, so the same `--name` can be used again.
    pub fn train(
        &self,
        gpu: &Gpu,
        data: &Dataset,
        output: Output,
    ) -> Result<(TrainOutcome, PathBuf), TrainError> {
        // Read before the folder exists: a wrong file must leave nothing behind.
        let init = match (&self.cfg.init, &self.resume) {
            (Some(path), None) => Some(
                checkpoint::load(path, Some(&self.cfg.model_spec()?)).map_err(TrainError::Init)?,
            ),
            _ => None,
        };
        let (dir, log) = self.create()?;
        let adapter = gpu.describe();
        if output == Output::Human {
            crate::errln!("adapter: {adapter}");
            crate::errln!(
                "data: {}\nrun folder: {}",
                data.dir.display(),
                dir.display()
            );
            if let Some((_, c)) = &self.resume {
                let m = &c.meta;
                let (e, s, step) = (m.epoch, m.step_in_epoch, m.step);
                crate::errln!("resuming after epoch {e} (+{s} steps), step {step}");
            }
            if let (Some(path), Some(_)) = (&self.cfg.init, &init) {
                crate::errln!("starting from the weights in {}", path.display());
            }
        }
        // A resumed run continues with the kernel variants it recorded, wherever they apply
        // on this adapter (another machine, another cache, WGPU_FMNIST_TUNE=0 or not).
        let recorded = match (&self.resume, crate::kernels::tune::Tuner::of(gpu)) {
            (Some(_), Some(t)) => crate::kernels::tune::RunChoices::read(&dir).map(|r| {
                t.pin(r.choices);
                r.adapter
            }),
            _ => None,
        };
        let mut reporter = ConsoleReporter::new(output, Some(log));
        let opts = RunOptions {
            run_dir: Some(&dir),
            resume: self.resume.as_ref().map(|(_, c)| c),
            init: init.as_ref().map(|c| c.params.as_slice()),
            stop: Some(interrupt_flag()),
            ..RunOptions::default()
        };
        let outcome = match crate::train::train_with(gpu, &self.cfg, data, &mut reporter, &opts) {
            Ok(o) => o,
            Err(e) => {
                if self.resume.is_none() && !dir.join("last.safetensors").exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };
        if let (Some(adapter), Some(t)) = (&recorded, crate::kernels::tune::Tuner::of(gpu)) {
            let changed = t.unpinned();
            if !changed.is_empty() && output != Output::Quiet {
                crate::errln!(
                    "note: {} of the kernel choices this run recorded (on {adapter}) do not \
                     apply on this adapter and were chosen anew: the continuation is not \
                     bit-identical to an uninterrupted run",
                    changed.len()
                );
            }
        }
        if let Err(e) = self.write_test_report(gpu, data, &outcome, &dir) {
            if output != Output::Quiet {
                crate::errln!("warning: could not write test.json: {e}");
            }
        }
        reporter.finish(&serde_json::json!({
            "kind": "summary", "model": self.cfg.model, "test_accuracy": outcome.test_accuracy,
            "test_loss": outcome.test_loss, "epochs": outcome.epochs_run,
            "stopped_early": outcome.stopped_early,
            "reached_target": outcome.reached_target,
            "seconds_to_val_accuracy": outcome.time_to_accuracy.training,
            "wall_seconds_to_val_accuracy": outcome.time_to_accuracy.wall,
            "images_per_second": outcome.images_per_second,
            "wall_seconds": outcome.wall_seconds, "adapter": adapter,
            "data": data.dir.display().to_string(),
            "run_dir": dir.display().to_string(),
        }));
        if let Err(e) = crate::report::write_run_report(&dir) {
            if output != Output::Quiet {
                crate::errln!("warning: could not write report.html: {e}");
            }
        }
        Ok((outcome, dir))
    }

    /// test.json: the final model's confusion matrix, per-class figures and most confident
    /// mistakes on the run's test split (what report.html shows).
    fn write_test_report(
        &self,
        gpu: &Gpu,
        data: &Dataset,
        outcome: &TrainOutcome,
        dir: &Path,
    ) -> Result<(), String> {
        let cfg = &self.cfg;
        let test = match cfg.limit_test {
            0 => data.test.clone(),
            n => data.test.take(n),
        };
        let ckpt = Checkpoint {
            spec: cfg.model_spec().map_err(|e| e.to_string())?,
            params: outcome.params.clone(),
            meta: checkpoint::Meta {
                input_mean: cfg.input_mean,
                input_std: cfg.input_std,
                ..Default::default()
            },
            optim: None,
        };
        let images: Vec<Vec<u8>> = test.images.pixels.chunks(784).map(<[u8]>::to_vec).collect();
        let probabilities =
            crate::infer::predict(gpu, &ckpt, &images, cfg.tta == crate::train::Tta::Flip)
                .map_err(|e| e.to_string())?;
        let report = crate::report::testset::TestReport::new(
            &probabilities,
            &test.labels,
            &test.images.pixels,
            &ckpt.meta.classes,
            24,
        );
        let json = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(&dir.join("test.json"), &json).map_err(|e| e.to_string())
    }
}

/// Ctrl-C, SIGTERM or SIGHUP sets the flag (the trainer saves and stops after the current
/// step); a second signal exits at once.
pub fn interrupt_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        crate::errln!("\ninterrupted: finishing the current step and saving last.safetensors (again to quit now)");
    });
    &STOP
}

/// A fresh run folder: `out/name`, or `out/name-2`, `-3`, ... when the name was not given
/// explicitly and is taken. An explicit name that exists is an error (nothing is
/// overwritten).
fn new_run_dir(cfg: &TrainConfig, explicit: bool) -> Result<PathBuf, ConfigError> {
    let io = |path: &Path, e: std::io::Error| ConfigError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if cfg.out.exists() && !cfg.out.is_dir() {
        return Err(ConfigError::Invalid {
            flag: "--out",
            message: format!(
                "{} is a file, not a folder for run folders",
                cfg.out.display()
            ),
        });
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| io(&cfg.out, e))?;
    let base = cfg.out.join(&cfg.name);
    for k in 1.. {
        let dir = match k {
            1 => base.clone(),
            _ if explicit => break,
            _ => cfg.out.join(format!("{}-{k}", cfg.name)),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir, e)),
        }
    }
    Err(ConfigError::Invalid {
        flag: "--name",
        message: format!(
            "{} already exists; choose another name or remove it",
            base.display()
        ),
    })
}
