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

/// Each step's mean training loss, recovered from the running figures of consecutive
/// progress reports (`RunOptions::step_metrics` reports after every step): what a run is
/// compared by, step for step, with another run of the same seed and data order.
#[derive(Clone, Debug, Default)]
pub struct StepLosses {
    /// One entry per step, in order; NaN for a step whose report was merged into a later one.
    pub losses: Vec<f64>,
    /// The previous report's step and loss sum within the current epoch.
    last: (usize, f64, usize),
}

impl StepLosses {
    pub fn record(&mut self, p: &Progress) {
        if p.step < self.last.0 {
            self.last = (0, 0.0, 0); // a new epoch: the running figures restart
        }
        let sum = p.running_loss * p.images as f64;
        let (step, prior, images) = self.last;
        if p.step > step {
            let mean = (sum - prior) / (p.images - images).max(1) as f64;
            match p.step - step {
                1 => self.losses.push(mean),
                merged => self.losses.extend(std::iter::repeat_n(f64::NAN, merged)),
            }
        }
        self.last = (p.step, sum, p.images);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: usize, running_loss: f64, images: usize) -> Progress {
        Progress {
            step,
            steps: 8,
            running_loss,
            running_accuracy: 0.0,
            images,
            images_per_second: 0.0,
        }
    }

    #[test]
    fn step_losses_undo_the_running_mean() {
        let mut s = StepLosses::default();
        s.record(&at(1, 2.0, 4)); // step 1: 2.0
        s.record(&at(2, 1.5, 8)); // step 2: (12 - 8) / 4 = 1.0
        s.record(&at(4, 1.0, 16)); // steps 3 and 4 merged: unknown each
        s.record(&at(1, 0.5, 4)); // the next epoch restarts the sums
        s.record(&at(2, 0.375, 7)); // a last, smaller batch of 3: (2.625 - 2) / 3
        let want = [2.0, 1.0, f64::NAN, f64::NAN, 0.5, 0.625 / 3.0];
        assert_eq!(s.losses.len(), want.len());
        for (got, want) in s.losses.iter().zip(want) {
            assert!(
                got.is_nan() && want.is_nan() || (got - want).abs() < 1e-12,
                "{:?}",
                s.losses
            );
        }
    }
}
