//! The flags of each command (clap), as `main.rs` parses them and `commands` takes them.

use crate::gpu::{AdapterRequest, Backend, Variant};
use crate::infer;
use crate::model::OptimizerKind;
use crate::train::{self, PartialConfig};
use clap::Args;
use std::path::PathBuf;

/// `train`: every setting flag overrides the `--config` file, which overrides the preset.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub settings: PartialConfig,
    /// TOML file with any of these settings (snake_case keys, e.g. batch_size = 64).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its last.safetensors (exactly: optimizer state,
    /// step and data order). Only --epochs (to extend), output, adapter and --variant flags
    /// may change.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// One JSON object per line on stdout: one per epoch, then a summary.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

/// `ablate`: the training flags give the settings every run shares.
#[derive(Args, Debug)]
pub struct AblateArgs {
    /// KEY=V1,V2,…: a training setting (lr, weight_decay, optimizer, schedule, flip, shift,
    /// label_smoothing, model, …) or `dropout` (every dropout layer's probability) and the
    /// values to try; repeat for more. Commas inside parentheses belong to the value.
    #[arg(long, required = true, value_name = "KEY=VALUES")]
    pub vary: Vec<String>,
    /// Change one --vary setting at a time from the shared settings, after a baseline run
    /// that changes none (what each ingredient of a recipe buys), instead of every
    /// combination.
    #[arg(long)]
    pub one_at_a_time: bool,
    #[command(flatten)]
    pub settings: PartialConfig,
    /// TOML file with any of the shared settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print only the final table (and errors).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct AugmentPreviewArgs {
    /// The augmentation, as `train --augment` takes it.
    #[arg(long, value_name = "ITEMS")]
    pub augment: String,
    /// The PNG to write.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "augment-preview.png"
    )]
    pub out: PathBuf,
    /// Augmented versions of each image.
    #[arg(long, default_value_t = 8, value_parser = train::config::at_least_one())]
    pub draws: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory with the four *-ubyte(.gz) files.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "regcnn")]
    pub model: String,
    /// Default: the preset's batch size (32 for a spec string).
    #[arg(long, value_parser = train::config::at_least_one())]
    pub batch_size: Option<usize>,
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Time the step with this `--augment` (as train takes it).
    #[arg(long, value_name = "ITEMS")]
    pub augment: Option<String>,
    /// Seconds of end-to-end training to time.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// List every dispatch of the step (default: totals per kernel).
    #[arg(long)]
    pub kernels: bool,
    /// One JSON object per kernel, then a summary line.
    #[arg(long)]
    pub json: bool,
    /// Compare with a saved `bench --json` result: time now / then per kernel and images/s
    /// end to end (above 1 is slower).
    #[arg(long, value_name = "FILE.json")]
    pub compare: Option<PathBuf>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

#[derive(Args)]
pub struct CheckArgs {
    /// One JSON object per line, then a summary line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    pub split: SplitName,
    /// The model, for checkpoints without `spec` metadata (e.g. saved from PyTorch).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 250, value_parser = train::config::at_least_one())]
    pub batch_size: usize,
    /// Test-time augmentation: flip = the mean logits of each image and its mirror image
    /// [default: the checkpoint's run's, from its recorded config; else none].
    #[arg(long, value_enum)]
    pub tta: Option<train::config::Tta>,
    /// One JSON object with accuracy, loss, per_class, confusion and the tta scored.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Invert the image (Fashion-MNIST items are light on a dark background); auto
    /// inverts pictures whose border is light.
    #[arg(long, value_enum, default_value_t = infer::Invert::Auto)]
    pub invert: infer::Invert,
    /// Test-time augmentation: flip = the mean logits of each image and its mirror image
    /// [default: the checkpoint's run's, from its recorded config; else none].
    #[arg(long, value_enum)]
    pub tta: Option<train::config::Tta>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitName {
    Test,
    Train,
}

/// How to choose the adapter.
#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// Graphics API.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Pick the adapter whose name contains this (case-insensitive).
    #[arg(long, value_name = "NAME-SUBSTRING")]
    pub adapter: Option<String>,
    /// Use the software fallback adapter (lavapipe on Linux, WARP on Windows).
    #[arg(long)]
    pub software: bool,
    /// Kernel variant to use wherever it applies (auto: the fastest for each shape and
    /// adapter); for timing variants and settling choices on a new GPU.
    #[arg(long, value_enum, default_value_t = Variant::Auto)]
    pub variant: Variant,
}

impl GpuArgs {
    pub fn request(&self) -> AdapterRequest {
        AdapterRequest {
            backend: self.backend,
            adapter: self.adapter.clone(),
            software: self.software,
            variant: self.variant,
        }
    }
}
