//! Training: configuration (`config`, with learning-rate `schedule`s), the trainer
//! (`trainer`: the whole loop on the GPU), non-blocking metrics readback (`readback`) and
//! the interface through which a run reports its progress (`report::Reporter`). Run
//! folders, console output and studies built on it are `crate::run`.

pub mod config;
pub mod milestones;
pub mod readback;
pub mod report;
pub mod schedule;
pub mod trainer;
mod validate;

pub use crate::infer::{split_indices, Evaluation, Evaluator, GpuSplit};
pub use config::{ConfigError, PartialConfig, TrainConfig, Tta};
pub use report::{EpochRecord, Progress, Reporter, Silent, StepLosses};
pub use trainer::Trainer;

use crate::data::Dataset;
use crate::gpu::{Gpu, GpuError};
use crate::model::LayerParams;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "training diverged: the running loss became {loss} in epoch {epoch} (by step {step}); \
         the last checkpoint of the run folder is the last good state; try a lower --lr \
         (--max-loss sets the threshold)"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f32,
    },
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("interrupted; the state after the last completed step is saved in {}", saved.display())]
    Interrupted { saved: std::path::PathBuf },
    #[error("--resume: {0}")]
    Resume(String),
    /// The `--init` checkpoint is unreadable or holds other layers.
    #[error("--init {0}")]
    Init(crate::checkpoint::CheckpointError),
}

/// Where checkpoints go, what to resume from, and how to be stopped.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Writes `last.safetensors` after every epoch and `best.safetensors` on a new best
    /// validation accuracy (atomically).
    pub run_dir: Option<&'a std::path::Path>,
    /// Continue from this checkpoint (parameters, optimizer state, step and epoch).
    pub resume: Option<&'a crate::checkpoint::Checkpoint>,
    /// A new run's starting weights (`--init`), in place of a fresh initialisation.
    pub init: Option<&'a [LayerParams]>,
    /// Checked between submissions: when set, the current step finishes, `last` is saved
    /// and training returns `TrainError::Interrupted`.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Reads the metrics back after every step, so that each step's loss reaches the
    /// reporter (`StepLosses`): for comparing runs step by step; slower.
    pub step_metrics: bool,
}

/// What a finished run produced.
pub struct TrainOutcome {
    pub params: Vec<LayerParams>,
    pub history: Vec<EpochRecord>,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub epochs_run: usize,
    pub images_per_second: f64,
    pub wall_seconds: f64,
    pub stopped_early: bool,
    /// `--target-accuracy` was reached, which ended the run.
    pub reached_target: bool,
    pub time_to_accuracy: milestones::TimeToAccuracy,
}

/// Trains as `cfg` says on `data`, reporting through `reporter`.
pub fn train(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &Dataset,
    reporter: &mut dyn Reporter,
) -> Result<TrainOutcome, TrainError> {
    train_with(gpu, cfg, data, reporter, &RunOptions::default())
}

/// `train` with checkpoints, resume and interruption.
pub fn train_with(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &Dataset,
    reporter: &mut dyn Reporter,
    opts: &RunOptions,
) -> Result<TrainOutcome, TrainError> {
    Trainer::new(gpu, cfg, data, opts)?.run(reporter)
}

/// `train_with`, awaiting every readback: the browser build's entry (natively `train_with`
/// blocks on the same code).
pub async fn train_async(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &Dataset,
    reporter: &mut dyn Reporter,
    opts: &RunOptions<'_>,
) -> Result<TrainOutcome, TrainError> {
    Trainer::new(gpu, cfg, data, opts)?
        .run_async(reporter)
        .await
}
