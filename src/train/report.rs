//! What the training loop tells its `Reporter`: running figures during an epoch, a record
//! at its end, messages. `crate::run::console` turns them into bars, lines and JSON.

use super::TrainConfig;
use crate::model::ModelSpec;
use serde::Serialize;

/// Running figures of the current epoch.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub running_loss: f64,
    pub running_accuracy: f64,
    pub images: usize,
    pub images_per_second: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
    /// Training seconds of the whole run so far (this epoch's included, resumed ones too).
    pub train_seconds_total: f64,
    /// Wall seconds since the run started (setup, validation and checkpoints included).
    pub wall_seconds_total: f64,
    pub images_per_second: f64,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Device memory at the epoch's end (constant after the first epoch: nothing leaks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<crate::gpu::GpuMemory>,
}

pub trait Reporter {
    fn start(
        &mut self,
        cfg: &TrainConfig,
        spec: &ModelSpec,
        train: usize,
        val: usize,
        test: usize,
        steps_per_epoch: usize,
    );
    fn epoch_start(&mut self, epoch: usize, epochs: usize);
    fn progress(&mut self, p: &Progress);
    fn epoch_end(&mut self, r: &EpochRecord);
    fn message(&mut self, text: &str);
    /// The run's closing summary (a JSON object with `kind: "summary"`).
    fn finish(&mut self, _summary: &serde_json::Value) {}
}

/// Collects nothing and prints nothing (library use, tests).
pub struct Silent;

impl Reporter for Silent {
    fn start(&mut self, _: &TrainConfig, _: &ModelSpec, _: usize, _: usize, _: usize, _: usize) {}
    fn epoch_start(&mut self, _: usize, _: usize) {}
    fn progress(&mut self, _: &Progress) {}
    fn epoch_end(&mut self, _: &EpochRecord) {}
    fn message(&mut self, _: &str) {}
}
