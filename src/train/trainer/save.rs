//! Checkpoints of a training run, with the kernel choices beside them.

use super::figures::finite_or_null;
use super::Trainer;
use crate::train::TrainError;

impl Trainer<'_> {
    /// Ctrl-C: saves `last` at the current step of `epoch` and returns the error that says so.
    pub(super) fn interrupted(&self, epoch: usize, recorded: usize) -> TrainError {
        let m = serde_json::json!({
            "best_val_accuracy": finite_or_null(self.best_val),
            "epochs_since_best": self.since_best,
            "plateau": self.plateau,
            "train_seconds_total": self.prior_seconds.0 + self.train_seconds,
            "wall_seconds_total": self.prior_seconds.1 + self.started.elapsed().as_secs_f64(),
            "time_to_val_accuracy": self.time_to_accuracy,
        });
        let step = self.epoch_start_step + recorded as u32;
        if let Err(e) = self.save("last.safetensors", epoch - 1, step, recorded, &m) {
            return e;
        }
        TrainError::Interrupted {
            saved: self
                .opts
                .run_dir
                .map(|d| d.join("last.safetensors"))
                .unwrap_or_default(),
        }
    }

    /// Writes a checkpoint into the run folder (atomically; nothing without a run folder).
    pub(super) fn save(
        &self,
        name: &str,
        epochs: usize,
        step: u32,
        step_in_epoch: usize,
        metrics: &serde_json::Value,
    ) -> Result<(), TrainError> {
        let Some(dir) = self.opts.run_dir else {
            return Ok(());
        };
        let (gpu, cfg) = (self.gpu, self.cfg);
        let ckpt = crate::checkpoint::Checkpoint {
            spec: self.spec.clone(),
            params: self.net.download(gpu)?,
            meta: crate::checkpoint::Meta {
                input_mean: cfg.input_mean,
                input_std: cfg.input_std,
                classes: crate::data::CLASSES.iter().map(|s| s.to_string()).collect(),
                config: cfg.to_toml(),
                epoch: epochs,
                step: step as u64,
                step_in_epoch,
                metrics: metrics.to_string(),
            },
            optim: Some(self.net.download_optim(gpu, cfg.optimizer, step as u64)?),
        };
        crate::checkpoint::save(&dir.join(name), &ckpt)?;
        // The kernels the run has used so far, beside its checkpoint: a resume continues
        // with them. Losing the record costs bit-identity on resume, not the run.
        if let Some(t) = crate::kernels::tune::Tuner::of(gpu) {
            let _ = crate::kernels::tune::RunChoices::update(dir, t);
        }
        Ok(())
    }
}
