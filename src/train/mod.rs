//! The trainer: everything on the GPU. The data set is uploaded once as u8; each epoch
//! uploads only a permutation; many steps are recorded per submission; loss and accuracy
//! accumulate on the GPU and are read back through a ring of staging buffers without
//! stalling the queue.

pub mod config;
pub mod readback;
pub mod report;

pub use config::{ConfigError, PartialConfig, TrainConfig};
pub use report::{EpochRecord, Progress, Reporter};

use crate::data::{Dataset, Split};
use crate::gpu::{Gpu, GpuError, Tensor};
use crate::kernels::data::{pack_bytes, GatherConfig};
use crate::kernels::softmax_xent::metrics;
use crate::model::LayerParams;
use crate::net::{self, Buffers, Mode, Network, OptimizerConfig, PlanInputs, Source};
use crate::rng::Rng;
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "training diverged: the loss became {loss} in epoch {epoch} (by step {step}); \
         try a lower --lr{hint}"
    )]
    Diverged { epoch: usize, step: usize, loss: f32, hint: &'static str },
    #[error("{0}")]
    Data(String),
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
}

/// Loss and accuracy of one pass over a split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
}

impl Evaluation {
    fn from_metrics(m: &[f32]) -> Evaluation {
        let count = m[metrics::COUNT] as f64;
        Evaluation {
            loss: m[metrics::LOSS_SUM] as f64 / count.max(1.0),
            accuracy: m[metrics::CORRECT] as f64 / count.max(1.0),
            count: count as usize,
        }
    }
}

/// A u8 split on the GPU (4 pixels / labels per u32 word).
pub struct GpuSplit {
    pub images: Tensor,
    pub labels: Tensor,
    pub len: usize,
}

impl GpuSplit {
    pub fn upload(gpu: &Gpu, name: &str, split: &Split) -> Result<GpuSplit, GpuError> {
        Ok(GpuSplit {
            images: gpu.upload(&format!("{name} images (u8)"), &pack_bytes(&split.images.pixels))?,
            labels: gpu.upload(&format!("{name} labels (u8)"), &pack_bytes(&split.labels))?,
            len: split.len(),
        })
    }
}

/// Evaluation plans for one split at a fixed batch size (plus a partial last batch).
pub struct Evaluator {
    // The plans reference these buffers; the evaluator owns them for its lifetime.
    _bufs: Buffers,
    _indices: Tensor,
    counter: Tensor,
    metrics: Tensor,
    full: Vec<crate::gpu::Dispatch>,
    partial: Vec<crate::gpu::Dispatch>,
    steps_full: usize,
}

impl Evaluator {
    /// Evaluates `indices` of `split` (eval mode) in batches of `batch`.
    pub fn new(gpu: &Gpu, net: &Network, split: &GpuSplit, indices: &[u32], batch: usize, mean: f32, std: f32) -> Result<Evaluator, GpuError> {
        let batch = batch.min(indices.len()).max(1);
        let bufs = Buffers::new(gpu, &net.spec, batch, Mode::Eval)?;
        let counter = gpu.upload("eval counter", &[0u32, 0])?;
        let idx = gpu.upload("eval indices", indices)?;
        let metrics_t = gpu.zeros("eval metrics", metrics::LEN)?;
        let gather = GatherConfig { batch, mean, std, flip: false, max_shift: 0, seed: 0, stride: batch };
        let inputs = PlanInputs {
            source: Source { images: &split.images, labels: &split.labels, indices: &idx, counter: &counter },
            gather,
            metrics: &metrics_t,
            dropout_seed: 0,
        };
        let full = net::eval_step(gpu, net, &bufs, &inputs, batch)?;
        let rem = indices.len() % batch;
        let partial = if rem > 0 { net::eval_step(gpu, net, &bufs, &inputs, rem)? } else { vec![] };
        Ok(Evaluator { _bufs: bufs, counter, _indices: idx, metrics: metrics_t, full, partial, steps_full: indices.len() / batch })
    }

    pub fn run(&self, gpu: &Gpu) -> Result<Evaluation, GpuError> {
        gpu.write(&self.counter, &[0u32, 0])?;
        gpu.write(&self.metrics, &[0f32; metrics::LEN])?;
        // Several submissions so a long evaluation never holds one huge command buffer.
        let per_submit = 64;
        let mut done = 0;
        while done < self.steps_full {
            let n = per_submit.min(self.steps_full - done);
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for _ in 0..n {
                    for d in &self.full {
                        d.record(&mut pass);
                    }
                }
            }
            gpu.queue.submit([encoder.finish()]);
            done += n;
        }
        if !self.partial.is_empty() {
            gpu.run(&self.partial.iter().collect::<Vec<_>>())?;
        }
        let m: Vec<f32> = gpu.read(&self.metrics)?;
        Ok(Evaluation::from_metrics(&m))
    }
}

/// Splits the training set: a seeded choice of `val` images held out, the rest trained on.
pub fn split_indices(n: usize, val: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut all: Vec<u32> = (0..n as u32).collect();
    Rng::new(seed ^ 0x7a1d_a7e5).shuffle(&mut all);
    let val = val.min(n);
    let mut train = all[val..].to_vec();
    let mut held = all[..val].to_vec();
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

/// Trains as `cfg` says on `data`, reporting through `reporter`.
pub fn train(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, reporter: &mut dyn Reporter) -> Result<TrainOutcome, TrainError> {
    let started = Instant::now();
    let spec = cfg.model_spec()?;
    let train_split = if cfg.limit_train > 0 { data.train.take(cfg.limit_train) } else { data.train.clone() };
    let test_split = if cfg.limit_test > 0 { data.test.take(cfg.limit_test) } else { data.test.clone() };
    if cfg.val >= train_split.len() {
        return Err(ConfigError::Invalid {
            flag: "--val",
            message: format!("{} validation images leave none of the {} training images to train on", cfg.val, train_split.len()),
        }
        .into());
    }
    let (train_idx, val_idx) = split_indices(train_split.len(), cfg.val, cfg.seed);
    let batch = cfg.batch_size.min(train_idx.len());
    if batch == 1 && spec.layers.iter().any(|l| matches!(l, crate::model::Layer::BatchNorm)) {
        return Err(ConfigError::Invalid { flag: "--batch-size", message: "batch norm needs batches of at least 2".into() }.into());
    }

    let net = Network::new(gpu, spec.clone(), &spec.init_params(cfg.seed))?;
    let gtrain = GpuSplit::upload(gpu, "train", &train_split)?;
    let gtest = GpuSplit::upload(gpu, "test", &test_split)?;
    let train_indices = gpu.upload("train permutation", &train_idx)?;
    let train_metrics = gpu.zeros("train metrics", metrics::LEN)?;
    let lr = gpu.upload("learning rate", &[cfg.lr])?;
    let opt = OptimizerConfig {
        kind: cfg.optimizer,
        momentum: cfg.momentum,
        nesterov: cfg.nesterov,
        weight_decay: cfg.weight_decay,
        l1: cfg.l1,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
    };
    let seed32 = (cfg.seed ^ (cfg.seed >> 32)) as u32;
    let bufs = Buffers::new(gpu, &spec, batch, Mode::Train)?;
    let inputs = PlanInputs {
        source: Source { images: &gtrain.images, labels: &gtrain.labels, indices: &train_indices, counter: &net.counter },
        gather: GatherConfig {
            batch,
            mean: cfg.input_mean,
            std: cfg.input_std,
            flip: cfg.flip,
            max_shift: cfg.shift,
            seed: seed32 ^ 0x0a06,
            stride: batch,
        },
        metrics: &train_metrics,
        dropout_seed: seed32 ^ 0xd0,
    };
    let full_plan = net::train_step(gpu, &net, &bufs, &inputs, &opt, &lr, batch)?;
    let rem = train_idx.len() % batch;
    let partial_plan = if rem > 0 { net::train_step(gpu, &net, &bufs, &inputs, &opt, &lr, rem)? } else { vec![] };
    let steps_full = train_idx.len() / batch;
    let steps_per_epoch = steps_full + usize::from(rem > 0);

    let val_eval = if val_idx.is_empty() {
        None
    } else {
        Some(Evaluator::new(gpu, &net, &gtrain, &val_idx, cfg.eval_batch_size, cfg.input_mean, cfg.input_std)?)
    };
    let test_ids: Vec<u32> = (0..gtest.len as u32).collect();
    let test_eval = Evaluator::new(gpu, &net, &gtest, &test_ids, cfg.eval_batch_size, cfg.input_mean, cfg.input_std)?;
    gpu.sync()?;

    reporter.start(cfg, &spec, train_idx.len(), val_idx.len(), gtest.len, steps_per_epoch);
    let mut ring = readback::MetricsRing::new(gpu, 3);
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut global_step: u32 = 0;
    let mut train_seconds = 0f64;
    let mut trained_images = 0usize;
    let (mut best_val, mut since_best, mut stopped_early) = (f64::NEG_INFINITY, 0usize, false);
    // Steps per submission adapt so that one submission is ~0.25 s of work.
    let mut chunk = 4usize;

    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let mut perm = train_idx.clone();
        Rng::new(cfg.seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch as u64)).shuffle(&mut perm);
        gpu.write(&train_indices, &perm)?;
        gpu.write_at(&net.counter, 1, &[global_step])?;
        gpu.write(&train_metrics, &[0f32; metrics::LEN])?;
        reporter.epoch_start(epoch, cfg.epochs);

        let mut recorded = 0usize;
        let mut last: Option<readback::Snapshot> = None;
        while recorded < steps_per_epoch {
            let n = chunk.min(steps_per_epoch - recorded);
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for s in recorded..recorded + n {
                    let plan = if s < steps_full { &full_plan } else { &partial_plan };
                    for d in plan {
                        d.record(&mut pass);
                    }
                }
            }
            recorded += n;
            let t0 = Instant::now();
            let landed = ring.submit(gpu, encoder, &train_metrics, recorded)?;
            for snap in landed {
                check_finite(&snap, epoch)?;
                reporter.progress(&progress(&snap, steps_per_epoch, epoch_start));
                last = Some(snap);
            }
            // Adapt the chunk from the observed rate once the pipeline is full.
            if let Some(s) = last {
                let rate = s.steps as f64 / epoch_start.elapsed().as_secs_f64().max(1e-3);
                chunk = ((rate * 0.25) as usize).clamp(1, 256);
            } else if t0.elapsed().as_secs_f64() < 0.05 {
                chunk = (chunk * 2).min(256);
            }
        }
        for snap in ring.drain(gpu)? {
            check_finite(&snap, epoch)?;
            reporter.progress(&progress(&snap, steps_per_epoch, epoch_start));
            last = Some(snap);
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        train_seconds += seconds;
        trained_images += train_idx.len();
        global_step += steps_per_epoch as u32;
        let train = Evaluation::from_metrics(&last.expect("at least one step").values);
        let val = match &val_eval {
            Some(e) => Some(e.run(gpu)?),
            None => None,
        };
        let record = EpochRecord {
            epoch,
            step: global_step as usize,
            train_loss: train.loss,
            train_accuracy: train.accuracy,
            val_loss: val.map(|v| v.loss),
            val_accuracy: val.map(|v| v.accuracy),
            seconds,
            images_per_second: train_idx.len() as f64 / seconds,
        };
        reporter.epoch_end(&record);
        history.push(record);
        if let Some(v) = val {
            if v.accuracy > best_val {
                best_val = v.accuracy;
                since_best = 0;
            } else {
                since_best += 1;
                if cfg.patience > 0 && since_best >= cfg.patience && epoch < cfg.epochs {
                    reporter.message(&format!(
                        "early stopping: validation accuracy has not improved for {} epochs (best {:.2} %)",
                        cfg.patience,
                        best_val * 100.0
                    ));
                    stopped_early = true;
                    break;
                }
            }
        }
    }

    let test = test_eval.run(gpu)?;
    let params = net.download(gpu)?;
    Ok(TrainOutcome {
        params,
        epochs_run: history.len(),
        history,
        test_loss: test.loss,
        test_accuracy: test.accuracy,
        images_per_second: trained_images as f64 / train_seconds.max(1e-9),
        wall_seconds: started.elapsed().as_secs_f64(),
        stopped_early,
    })
}

fn progress(s: &readback::Snapshot, steps_per_epoch: usize, since: Instant) -> Progress {
    let e = Evaluation::from_metrics(&s.values);
    Progress {
        step: s.steps,
        steps: steps_per_epoch,
        running_loss: e.loss,
        running_accuracy: e.accuracy,
        images: e.count,
        images_per_second: e.count as f64 / since.elapsed().as_secs_f64().max(1e-9),
    }
}

fn check_finite(s: &readback::Snapshot, epoch: usize) -> Result<(), TrainError> {
    let loss = s.values[metrics::LOSS_SUM];
    if !loss.is_finite() {
        return Err(TrainError::Diverged { epoch, step: s.steps, loss, hint: "" });
    }
    Ok(())
}
