//! How a CLI run reports: progress bars or epoch lines on stderr, JSON lines on stdout, the
//! run's metrics.jsonl and its curves.png redrawn every epoch.

use crate::model::ModelSpec;
use crate::train::{EpochRecord, Progress, Reporter, TrainConfig};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Bars on a terminal, else one line per epoch, on stderr.
    Human,
    /// JSON lines on stdout.
    Json,
    Quiet,
}

pub struct ConsoleReporter {
    output: Output,
    bar: Option<indicatif::ProgressBar>,
    epochs: usize,
    jsonl: Option<MetricsLog>,
    last_logged_step: usize,
    epoch: usize,
    /// The learning rate changes: the epoch lines show it.
    scheduled: bool,
    /// curves.png could not be drawn once: said once, not every epoch.
    curves_failed: bool,
}

impl ConsoleReporter {
    /// `metrics` is the run's metrics.jsonl.
    pub fn new(output: Output, metrics: Option<MetricsLog>) -> ConsoleReporter {
        ConsoleReporter {
            output,
            bar: None,
            epochs: 0,
            jsonl: metrics,
            last_logged_step: 0,
            epoch: 0,
            scheduled: false,
            curves_failed: false,
        }
    }

    fn log(&mut self, value: serde_json::Value) {
        if let Some(f) = &mut self.jsonl {
            f.write(&value);
        }
    }

    /// Redraws the run's curves.png from its metrics.jsonl. A failure is reported once and
    /// never stops training.
    fn draw_curves(&mut self) {
        let Some(log) = &self.jsonl else { return };
        if let Err(e) = crate::report::curves::write_png(log.run_dir()) {
            if !self.curves_failed && self.output != Output::Quiet {
                crate::errln!("warning: could not draw curves.png: {e}");
            }
            self.curves_failed = true;
        }
    }

    fn tty() -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

impl Reporter for ConsoleReporter {
    fn start(
        &mut self,
        cfg: &TrainConfig,
        spec: &ModelSpec,
        train: usize,
        val: usize,
        test: usize,
        steps: usize,
    ) {
        self.epochs = cfg.epochs;
        self.scheduled = cfg.schedule != "constant";
        if self.output == Output::Human {
            let params: usize = (0..spec.layers.len()).map(|i| spec.param_count(i)).sum();
            crate::errln!(
                "training {} ({} parameters): {} train / {} val / {} test images, batch {}, {} steps per epoch, {} lr {}",
                cfg.model, params, train, val, test, cfg.batch_size, steps, cfg.optimizer, cfg.lr
            );
        }
    }

    fn epoch_start(&mut self, epoch: usize, epochs: usize) {
        self.last_logged_step = 0;
        self.epoch = epoch;
        if self.output == Output::Human && Self::tty() {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} {bar:30} {pos}/{len} steps  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }

    fn progress(&mut self, p: &Progress) {
        if let Some(bar) = &self.bar {
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "loss {:.4}  acc {:.2} %  {:.0} img/s",
                p.running_loss,
                p.running_accuracy * 100.0,
                p.images_per_second
            ));
        }
        // metrics.jsonl gets a running line at most every 100 steps.
        if p.step >= self.last_logged_step + 100 || p.step == p.steps {
            self.last_logged_step = p.step;
            self.log(serde_json::json!({
                "kind": "step", "epoch": self.epoch, "steps_per_epoch": p.steps,
                "step_in_epoch": p.step, "running_loss": p.running_loss,
                "running_accuracy": p.running_accuracy, "images_per_second": p.images_per_second,
            }));
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["kind"] = "epoch".into();
        self.log(v.clone());
        self.draw_curves();
        match self.output {
            Output::Human => {
                let val = match (r.val_loss, r.val_accuracy) {
                    (Some(l), Some(a)) => format!("  val loss {l:.4} acc {:.2} %", a * 100.0),
                    _ => String::new(),
                };
                let lr = match self.scheduled {
                    true => format!("  lr {:.3e}", r.lr),
                    false => String::new(),
                };
                crate::errln!(
                    "epoch {}/{}  train loss {:.4} acc {:.2} %{val}{lr}  {:.1} s  {:.0} img/s",
                    r.epoch,
                    self.epochs,
                    r.train_loss,
                    r.train_accuracy * 100.0,
                    r.seconds,
                    r.images_per_second
                );
            }
            Output::Json => crate::outln!("{v}"),
            Output::Quiet => {}
        }
    }

    fn message(&mut self, text: &str) {
        self.log(serde_json::json!({ "kind": "message", "text": text }));
        match self.output {
            Output::Human => crate::errln!("{text}"),
            Output::Json => {
                crate::outln!("{}", serde_json::json!({ "kind": "message", "text": text }))
            }
            Output::Quiet => {}
        }
    }

    fn finish(&mut self, summary: &serde_json::Value) {
        self.log(summary.clone());
        self.draw_curves();
        if self.output == Output::Json {
            crate::outln!("{summary}");
        }
    }
}

/// The run's metrics.jsonl: one JSON object per line (running figures, epochs, messages,
/// the final summary). Write errors are ignored: a full disk must not stop training.
pub struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Creates the file afresh, or appends (a resumed run).
    pub fn open(path: &Path, append: bool) -> std::io::Result<MetricsLog> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .map(|file| MetricsLog {
                file,
                path: path.to_path_buf(),
            })
    }

    /// The run folder the log is in.
    pub fn run_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn write(&mut self, value: &serde_json::Value) {
        let _ = writeln!(self.file, "{value}");
    }
}
