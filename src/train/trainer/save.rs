//! Checkpoints of a training run, with the kernel choices beside them.

use super::figures::finite_or_null;
use super::Trainer;
use crate::checkpoint::{named_tensors, OptimState};
use crate::model::LayerParams;
use crate::train::{EpochRecord, TrainError};

impl Trainer<'_> {
    /// Tracks the best validation accuracy; saves `last` (and `best` on a new best).
    pub(super) fn end_epoch(&mut self, r: &EpochRecord) -> Result<(), TrainError> {
        let mut improved = false;
        if let Some(acc) = r.val_accuracy {
            if acc > self.best_val {
                (self.best_val, self.since_best, improved) = (acc, 0, true);
            } else {
                self.since_best += 1;
            }
        }
        if let Some(loss) = r.val_loss {
            if self
                .plateau
                .observe(&self.schedule, self.cfg.lr as f64, loss)
            {
                let table = self.schedule.table(
                    self.cfg.lr as f64,
                    self.plans.steps(),
                    self.cfg.epochs,
                    self.plateau.scale,
                );
                self.gpu.write(&self.lr_table, &table)?;
            }
        }
        let mut m = serde_json::to_value(r).unwrap_or_default();
        m["best_val_accuracy"] = finite_or_null(self.best_val);
        m["epochs_since_best"] = self.since_best.into();
        m["plateau"] = serde_json::to_value(self.plateau).unwrap_or_default();
        m["time_to_val_accuracy"] =
            serde_json::to_value(&self.time_to_accuracy).unwrap_or_default();
        let step = self.epoch_start_step;
        self.save("last.safetensors", r.epoch, step, 0, &m)?;
        if improved {
            self.save("best.safetensors", r.epoch, step, 0, &m)?;
        }
        Ok(())
    }

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

    /// The model: `--ema`'s averages, else the trained weights.
    pub(super) fn model_params(&self) -> Result<Vec<LayerParams>, TrainError> {
        pollster::block_on(self.model_params_async())
    }

    pub(super) async fn model_params_async(&self) -> Result<Vec<LayerParams>, TrainError> {
        self.net.sync_average(self.gpu)?;
        let averaged = self.net.averaged();
        Ok(averaged
            .as_ref()
            .unwrap_or(&self.net)
            .download_async(self.gpu)
            .await?)
    }

    /// The optimizer's state, with the raw weights where the model is `--ema`'s averages.
    fn optim_state(&self, step: u64) -> Result<OptimState, TrainError> {
        let mut o = self
            .net
            .download_optim(self.gpu, self.cfg.optimizer, step)?;
        if self.net.average.is_some() {
            o.raw = named_tensors(&self.spec, &self.net.download(self.gpu)?);
        }
        Ok(o)
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
            params: self.model_params()?,
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
            optim: Some(self.optim_state(step as u64)?),
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
