//! Training configuration: preset defaults, overridden by a TOML file (`--config`), overridden
//! by command-line flags. The resolved configuration is written to the run folder.

use super::schedule::Schedule;
use crate::gpu::{AdapterRequest, Backend, Variant};
use crate::kernels::augment::Augment;
use crate::model::{self, ModelSpec, OptimizerKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    // Not `#[from]`: that would also make the spec error this error's source, and
    // `{:#}` printing would repeat it.
    #[error("--model: {0}")]
    Model(model::SpecError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl From<model::SpecError> for ConfigError {
    fn from(e: model::SpecError) -> Self {
        ConfigError::Model(e)
    }
}

/// Every setting optional: one layer of the configuration (a TOML file, or the flags of
/// `train`: each field is the flag of the same name, snake_case in the file).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct PartialConfig {
    /// Preset (mlp, cnn1, cnn2, regcnn, vgg, fast) or a layer spec, e.g. "conv(32,3) bn relu maxpool(2) flatten linear(10)".
    ///
    /// `summary --model NAME` shows a preset's layers and recipe. vgg's recipe (SGD 0.15
    /// without momentum, seed 003's) makes its first epoch depend on the seed, in PyTorch as
    /// here: from the weights and data order of --seed 0, PyTorch reaches 78.1 % test
    /// accuracy after epoch 1 and this program 78.5 %; --seed 1 gives 85.6 %.
    #[arg(long)]
    pub model: Option<String>,
    /// Epochs to train (default: the preset's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size (default: the preset's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimizer (default: the preset's).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate (default: the preset's).
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (SGD).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub nesterov: Option<bool>,
    /// L2 penalty (SGD, Adam) or decoupled decay (AdamW).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// L1 penalty: adds l1 * sign(w) to each gradient.
    #[arg(long)]
    pub l1: Option<f32>,
    /// Adam's first-moment decay (default 0.9).
    #[arg(long)]
    pub beta1: Option<f32>,
    /// Adam's second-moment decay (default 0.999).
    #[arg(long)]
    pub beta2: Option<f32>,
    /// Adam's epsilon (default 1e-8).
    #[arg(long)]
    pub eps: Option<f32>,
    /// Seed of the initial weights, data order, dropout masks and augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from the weights of this checkpoint instead of a fresh initialisation: a run's
    /// .safetensors or a PyTorch state dict of the same layers (the optimizer starts fresh).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Training images held out for validation (0: train on all).
    #[arg(long)]
    pub val: Option<usize>,
    /// Early stopping: stop after N epochs without a better validation accuracy.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Stop at the end of the first epoch whose validation accuracy reaches PERCENT (e.g.
    /// 93.5); the run records when validation first crossed it (and 90..94 %).
    #[arg(long, value_name = "PERCENT")]
    pub target_accuracy: Option<f64>,
    /// Test-time augmentation of validation and test: flip = the mean logits of each image
    /// and its mirror image.
    #[arg(long, value_enum)]
    pub tta: Option<Tta>,
    /// Evaluate (validate, test, save) an exponential moving average of the weights and
    /// batch-norm statistics, updated after every step: avg += (1 - DECAY) (w - avg), as
    /// torch's AveragedModel with get_ema_multi_avg_fn(DECAY). E.g. 0.999; 0: off.
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f32>,
    /// Label smoothing of the training loss, as torch's CrossEntropyLoss(label_smoothing)
    /// (default 0; validation and test report the plain cross-entropy).
    #[arg(long, value_name = "E")]
    pub label_smoothing: Option<f32>,
    /// Learning-rate schedule: constant (default), step(every=E,gamma=0.1),
    /// multistep(at=E1:E2,gamma=0.1), exp(gamma=0.95), cosine(warmup=EPOCHS,min=0),
    /// onecycle(pct=0.3,div=25,final_div=1e4) or plateau(factor=0.1,patience=10).
    #[arg(long, value_name = "SCHEDULE")]
    pub schedule: Option<String>,
    /// GPU data augmentation, items separated by spaces, e.g. "affine(rotate=10,translate=0.1)
    /// flip erase(p=0.5) noise(0.05)": flip(p) vflip(p) shift(N) resized_crop(scale,ratio,p)
    /// affine(rotate,translate,scale,shear,p) perspective(d,p) brightness(B) contrast(C)
    /// blur(k,sigma,p) noise(SIGMA) erase(p,scale,ratio,value); ranges as LO:HI.
    #[arg(long, value_name = "ITEMS")]
    pub augment: Option<String>,
    /// Augment with random horizontal flips.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub flip: Option<bool>,
    /// Augment with random shifts of up to N pixels.
    #[arg(long, value_name = "N")]
    pub shift: Option<u32>,
    /// Mean subtracted from pixels scaled to [0, 1] (default 0.5).
    #[arg(long)]
    pub input_mean: Option<f32>,
    /// Standard deviation pixels are divided by (default 0.5).
    #[arg(long)]
    pub input_std: Option<f32>,
    /// Stop as diverged when the running training loss exceeds this (default 1000; a
    /// NaN or infinite loss always stops).
    #[arg(long)]
    pub max_loss: Option<f32>,
    /// Batch size for validation and test passes.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Train on only the first N training images (quick runs; 0 in a config file: all).
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub limit_train: Option<usize>,
    /// Test on only the first N test images.
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub limit_test: Option<usize>,
    /// Directory with the four *-ubyte(.gz) files.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Parent folder of run folders.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run folder name (default: the model name, numbered if taken).
    #[arg(long)]
    pub name: Option<String>,
    /// Graphics API.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Pick the adapter whose name contains this (case-insensitive).
    #[arg(long, value_name = "NAME-SUBSTRING")]
    pub adapter: Option<String>,
    /// Use the software fallback adapter (lavapipe on Linux, WARP on Windows).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub software: Option<bool>,
    /// Kernel variant to use wherever it applies (auto: the fastest for each shape).
    #[arg(long, value_enum)]
    pub variant: Option<Variant>,
}

/// A count flag that must be at least 1 (clap names the flag in its error, exit 2).
pub fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

macro_rules! overlay {
    ($dst:ident, $src:ident, $($f:ident),*) => { $( if $src.$f.is_some() { $dst.$f = $src.$f.clone(); } )* };
}

impl PartialConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not be silently ignored).
    pub fn from_file(path: &std::path::Path) -> Result<PartialConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.into(),
            message: e.to_string(),
        })?;
        PartialConfig::from_toml(&text).map_err(|message| ConfigError::File {
            path: path.into(),
            message,
        })
    }

    /// Parses the text of a config file (the message says what is wrong and where).
    pub fn from_toml(text: &str) -> Result<PartialConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `self` with every setting `top` has replaced.
    pub fn overlay(mut self, top: &PartialConfig) -> PartialConfig {
        overlay!(
            self,
            top,
            model,
            epochs,
            batch_size,
            optimizer,
            lr,
            momentum,
            nesterov,
            weight_decay,
            l1,
            beta1,
            beta2,
            eps,
            seed,
            init,
            val,
            patience,
            target_accuracy,
            tta,
            ema,
            label_smoothing,
            schedule,
            augment,
            flip,
            shift,
            input_mean,
            input_std,
            max_loss,
            eval_batch_size,
            limit_train,
            limit_test,
            data,
            out,
            name,
            backend,
            adapter,
            software,
            variant
        );
        self
    }
}

/// A fully resolved configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// The preset name or spec string the user gave.
    pub model: String,
    /// The canonical layer spec.
    pub spec: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub l1: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub seed: u64,
    /// The checkpoint whose weights the run started from (`--init`; none: fresh weights
    /// from `seed`). A resumed run takes its weights from last.safetensors instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Training images held out for validation.
    pub val: usize,
    /// Stop after this many epochs without a better validation accuracy (0: never).
    pub patience: usize,
    /// Stop once validation accuracy reaches this many percent (runs before it: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_accuracy: Option<f64>,
    /// Test-time augmentation of validation and test (runs before it: none).
    #[serde(default)]
    pub tta: Tta,
    /// `--ema`'s decay (none: the raw weights are evaluated and saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f32>,
    #[serde(default)]
    pub label_smoothing: f32,
    /// Learning-rate schedule (`schedule::Schedule`'s text; runs before it existed: constant).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// `--augment` in canonical form ("none": off; runs before it existed: none).
    #[serde(default = "default_augment")]
    pub augment: String,
    pub flip: bool,
    pub shift: u32,
    pub input_mean: f32,
    pub input_std: f32,
    /// A running training loss above this stops the run as diverged.
    #[serde(default = "default_max_loss")]
    pub max_loss: f32,
    pub eval_batch_size: usize,
    /// Use only the first N training / test images (0: all).
    pub limit_train: usize,
    pub limit_test: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub name: String,
    pub backend: Backend,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    pub software: bool,
    /// Kernel variant to use wherever it applies (`--variant`; configurations written
    /// before it existed mean `auto`).
    #[serde(default)]
    pub variant: Variant,
}

impl TrainConfig {
    /// Preset defaults under `layers` (file, then flags).
    pub fn resolve(layers: &PartialConfig) -> Result<TrainConfig, ConfigError> {
        let model = layers.model.clone().unwrap_or_else(|| "regcnn".to_string());
        let (spec, preset) = model::resolve(&model)?;
        let d = preset.cloned().unwrap_or(model::Preset::CUSTOM);
        let optimizer = layers.optimizer.unwrap_or(d.optimizer);
        let cfg = TrainConfig {
            spec: spec.to_text(),
            epochs: layers.epochs.unwrap_or(d.epochs),
            batch_size: layers.batch_size.unwrap_or(d.batch_size),
            optimizer,
            lr: layers.lr.unwrap_or(if optimizer == d.optimizer {
                d.lr
            } else {
                default_lr(optimizer)
            }),
            momentum: layers.momentum.unwrap_or(if optimizer == d.optimizer {
                d.momentum
            } else {
                0.0
            }),
            nesterov: layers
                .nesterov
                .unwrap_or(optimizer == d.optimizer && d.recipe.nesterov),
            weight_decay: layers.weight_decay.unwrap_or(if optimizer == d.optimizer {
                d.weight_decay
            } else {
                0.0
            }),
            l1: layers.l1.unwrap_or(0.0),
            beta1: layers.beta1.unwrap_or(0.9),
            beta2: layers.beta2.unwrap_or(0.999),
            eps: layers.eps.unwrap_or(1e-8),
            seed: layers.seed.unwrap_or(0),
            init: layers.init.clone(),
            val: layers.val.unwrap_or(5000),
            patience: layers.patience.unwrap_or(0),
            target_accuracy: layers.target_accuracy,
            tta: layers.tta.unwrap_or(match d.recipe.tta_flip {
                true => Tta::Flip,
                false => Tta::None,
            }),
            // Decay 0 is the raw weights themselves: off (so a study can vary ema=0,0.999).
            ema: Some(layers.ema.unwrap_or(d.recipe.ema)).filter(|&d| d != 0.0),
            label_smoothing: layers.label_smoothing.unwrap_or(d.recipe.label_smoothing),
            augment: Augment::parse(layers.augment.as_deref().unwrap_or(d.recipe.augment))
                .map_err(|e| ConfigError::Invalid {
                    flag: "--augment",
                    message: format!("`{}`: {}", e.item, e.message),
                })?
                .to_string(),
            schedule: Schedule::parse(layers.schedule.as_deref().unwrap_or(d.recipe.schedule))
                .map_err(|e| ConfigError::Invalid {
                    flag: "--schedule",
                    message: e.message,
                })?
                .to_string(),
            flip: layers.flip.unwrap_or(false),
            shift: layers.shift.unwrap_or(0),
            input_mean: layers.input_mean.unwrap_or(0.5),
            input_std: layers.input_std.unwrap_or(0.5),
            max_loss: layers.max_loss.unwrap_or_else(default_max_loss),
            eval_batch_size: layers.eval_batch_size.unwrap_or(250),
            limit_train: layers.limit_train.unwrap_or(0),
            limit_test: layers.limit_test.unwrap_or(0),
            data: layers.data.clone(),
            out: layers.out.clone().unwrap_or_else(|| PathBuf::from("runs")),
            name: layers.name.clone().unwrap_or_else(|| {
                if preset.is_some() {
                    model.to_lowercase()
                } else {
                    "custom".into()
                }
            }),
            backend: layers.backend.unwrap_or_default(),
            adapter: layers.adapter.clone(),
            software: layers.software.unwrap_or(false),
            variant: layers.variant.unwrap_or_default(),
            model,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The optimizer settings of this configuration.
    pub fn optimizer_config(&self) -> crate::net::OptimizerConfig {
        crate::net::OptimizerConfig {
            kind: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            l1: self.l1,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
        }
    }

    /// The adapter and kernel choice this configuration asks for.
    pub fn adapter_request(&self) -> AdapterRequest {
        AdapterRequest {
            backend: self.backend,
            adapter: self.adapter.clone(),
            software: self.software,
            variant: self.variant,
        }
    }

    pub fn model_spec(&self) -> Result<ModelSpec, ConfigError> {
        Ok(ModelSpec::parse(&self.spec)?)
    }

    /// Reads a run folder's config.toml (what `to_toml` wrote), before validation.
    pub fn from_run_toml(text: &str) -> Result<TrainConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# could not serialise the configuration: {e}\n"))
    }
}

/// Test-time augmentation of evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// Each image as it is.
    #[default]
    None,
    /// The mean logits of each image and its mirror image (left to right).
    Flip,
}

impl Tta {
    /// The TTA a run was scored with, from the config.toml a checkpoint records (none for a
    /// checkpoint without one, e.g. PyTorch's): what `eval` and `predict` use by default.
    pub fn recorded_in(config_toml: &str) -> Tta {
        let table = toml::from_str::<toml::Table>(config_toml).unwrap_or_default();
        match table.get("tta").and_then(|v| v.as_str()) {
            Some("flip") => Tta::Flip,
            _ => Tta::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
        }
    }
}

fn default_augment() -> String {
    "none".into()
}

fn default_schedule() -> String {
    "constant".into()
}

/// Far above any real cross-entropy over 10 classes (ln 10 = 2.3 at chance; a confidently
/// wrong model stays well under 100), far below a run that has blown up.
fn default_max_loss() -> f32 {
    1000.0
}

fn default_lr(kind: OptimizerKind) -> f32 {
    match kind {
        OptimizerKind::Sgd => 0.01,
        OptimizerKind::Adam | OptimizerKind::Adamw => 1e-3,
    }
}
