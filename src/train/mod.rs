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
use crate::net::{self, Buffers, Mode, Network, PlanInputs, Source};
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
    Diverged {
        epoch: usize,
        step: usize,
        loss: f32,
        hint: &'static str,
    },
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("interrupted; the state after the last completed step is saved in {}", saved.display())]
    Interrupted { saved: std::path::PathBuf },
    #[error("--resume: {0}")]
    Resume(String),
}

/// Where checkpoints go, what to resume from, and how to be stopped.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Writes `last.safetensors` after every epoch and `best.safetensors` on a new best
    /// validation accuracy (atomically).
    pub run_dir: Option<&'a std::path::Path>,
    /// Continue from this checkpoint (parameters, optimizer state, step and epoch).
    pub resume: Option<&'a crate::checkpoint::Checkpoint>,
    /// Checked between submissions: when set, the current step finishes, `last` is saved
    /// and training returns `TrainError::Interrupted`.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
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
            images: gpu.upload(
                &format!("{name} images (u8)"),
                &pack_bytes(&split.images.pixels),
            )?,
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
    confusion: Option<Tensor>,
    full: Vec<crate::gpu::Dispatch>,
    partial: Vec<crate::gpu::Dispatch>,
    steps_full: usize,
}

impl Evaluator {
    /// Evaluates `indices` of `split` (eval mode) in batches of `batch`.
    pub fn new(
        gpu: &Gpu,
        net: &Network,
        split: &GpuSplit,
        indices: &[u32],
        batch: usize,
        mean: f32,
        std: f32,
    ) -> Result<Evaluator, GpuError> {
        Self::with_confusion(gpu, net, split, indices, batch, mean, std, false)
    }

    /// As `new`; with `confusion` it also counts (label, prediction) pairs on the GPU.
    #[allow(clippy::too_many_arguments)]
    pub fn with_confusion(
        gpu: &Gpu,
        net: &Network,
        split: &GpuSplit,
        indices: &[u32],
        batch: usize,
        mean: f32,
        std: f32,
        confusion: bool,
    ) -> Result<Evaluator, GpuError> {
        let batch = batch.min(indices.len()).max(1);
        let bufs = Buffers::new(gpu, &net.spec, batch, Mode::Eval)?;
        let counter = gpu.upload("eval counter", &[0u32, 0])?;
        let idx = gpu.upload("eval indices", indices)?;
        let metrics_t = gpu.zeros("eval metrics", metrics::LEN)?;
        let gather = GatherConfig {
            batch,
            mean,
            std,
            flip: false,
            max_shift: 0,
            seed: 0,
            stride: batch,
        };
        let inputs = PlanInputs {
            source: Source {
                images: &split.images,
                labels: &split.labels,
                indices: &idx,
                counter: &counter,
            },
            gather,
            metrics: &metrics_t,
            dropout_seed: 0,
        };
        let classes = crate::model::NUM_CLASSES;
        let conf = if confusion {
            Some(gpu.zeros("confusion", classes * classes)?)
        } else {
            None
        };
        let full = net::eval_step(gpu, net, &bufs, &inputs, batch, conf.as_ref())?;
        let rem = indices.len() % batch;
        let partial = if rem > 0 {
            net::eval_step(gpu, net, &bufs, &inputs, rem, conf.as_ref())?
        } else {
            vec![]
        };
        Ok(Evaluator {
            _bufs: bufs,
            counter,
            _indices: idx,
            metrics: metrics_t,
            confusion: conf,
            full,
            partial,
            steps_full: indices.len() / batch,
        })
    }

    /// The confusion counts of the last `run` (row = label, column = prediction).
    pub fn confusion(&self, gpu: &Gpu) -> Result<Option<Vec<u32>>, GpuError> {
        self.confusion
            .as_ref()
            .map(|c| gpu.read::<u32>(c))
            .transpose()
    }

    pub fn run(&self, gpu: &Gpu) -> Result<Evaluation, GpuError> {
        gpu.write(&self.counter, &[0u32, 0])?;
        gpu.write(&self.metrics, &[0f32; metrics::LEN])?;
        if let Some(c) = &self.confusion {
            gpu.write(c, &vec![0u32; c.len])?;
        }
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
    let started = Instant::now();
    let spec = cfg.model_spec()?;
    let train_split = if cfg.limit_train > 0 {
        data.train.take(cfg.limit_train)
    } else {
        data.train.clone()
    };
    let test_split = if cfg.limit_test > 0 {
        data.test.take(cfg.limit_test)
    } else {
        data.test.clone()
    };
    if cfg.val >= train_split.len() {
        return Err(ConfigError::Invalid {
            flag: "--val",
            message: format!(
                "{} validation images leave none of the {} training images to train on",
                cfg.val,
                train_split.len()
            ),
        }
        .into());
    }
    let (train_idx, val_idx) = split_indices(train_split.len(), cfg.val, cfg.seed);
    let batch = cfg.batch_size.min(train_idx.len());
    if batch == 1
        && spec
            .layers
            .iter()
            .any(|l| matches!(l, crate::model::Layer::BatchNorm))
    {
        return Err(ConfigError::Invalid {
            flag: "--batch-size",
            message: "batch norm needs batches of at least 2".into(),
        }
        .into());
    }

    let init = match opts.resume {
        Some(c) => {
            if c.spec.layers != spec.layers {
                return Err(TrainError::Resume(format!(
                    "the checkpoint holds `{}`, the configuration `{}`",
                    c.spec.to_text(),
                    spec.to_text()
                )));
            }
            c.params.clone()
        }
        None => spec.init_params(cfg.seed),
    };
    let net = Network::new(gpu, spec.clone(), &init)?;
    // Where the run stands: completed epochs, and steps into the next one.
    let (done_epochs, skip_steps, mut epoch_start_step) = match opts.resume {
        Some(c) => {
            if let Some(o) = &c.optim {
                if o.kind != Some(cfg.optimizer) {
                    return Err(TrainError::Resume(format!(
                        "the checkpoint's optimizer state is for {:?}, the run uses {}",
                        o.kind, cfg.optimizer
                    )));
                }
                net.upload_optim(gpu, o)?;
            }
            (
                c.meta.epoch,
                c.meta.step_in_epoch,
                (c.meta.step - c.meta.step_in_epoch as u64) as u32,
            )
        }
        None => (0, 0, 0),
    };
    let gtrain = GpuSplit::upload(gpu, "train", &train_split)?;
    let gtest = GpuSplit::upload(gpu, "test", &test_split)?;
    let train_indices = gpu.upload("train permutation", &train_idx)?;
    let train_metrics = gpu.zeros("train metrics", metrics::LEN)?;
    let lr = gpu.upload("learning rate", &[cfg.lr])?;
    let opt = cfg.optimizer_config();
    let seed32 = (cfg.seed ^ (cfg.seed >> 32)) as u32;
    let bufs = Buffers::new(gpu, &spec, batch, Mode::Train)?;
    let inputs = PlanInputs {
        source: Source {
            images: &gtrain.images,
            labels: &gtrain.labels,
            indices: &train_indices,
            counter: &net.counter,
        },
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
    let partial_plan = if rem > 0 {
        net::train_step(gpu, &net, &bufs, &inputs, &opt, &lr, rem)?
    } else {
        vec![]
    };
    let steps_full = train_idx.len() / batch;
    let steps_per_epoch = steps_full + usize::from(rem > 0);

    let val_eval = if val_idx.is_empty() {
        None
    } else {
        Some(Evaluator::new(
            gpu,
            &net,
            &gtrain,
            &val_idx,
            cfg.eval_batch_size,
            cfg.input_mean,
            cfg.input_std,
        )?)
    };
    let test_ids: Vec<u32> = (0..gtest.len as u32).collect();
    let test_eval = Evaluator::new(
        gpu,
        &net,
        &gtest,
        &test_ids,
        cfg.eval_batch_size,
        cfg.input_mean,
        cfg.input_std,
    )?;
    gpu.sync()?;

    reporter.start(
        cfg,
        &spec,
        train_idx.len(),
        val_idx.len(),
        gtest.len,
        steps_per_epoch,
    );
    let mut ring = readback::MetricsRing::new(gpu, 3);
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut train_seconds = 0f64;
    let mut trained_images = 0usize;
    let (mut best_val, mut since_best, mut stopped_early) = (f64::NEG_INFINITY, 0usize, false);
    if let Some(c) = opts.resume {
        let m: serde_json::Value = serde_json::from_str(&c.meta.metrics).unwrap_or_default();
        best_val = m["best_val_accuracy"].as_f64().unwrap_or(f64::NEG_INFINITY);
        since_best = m["epochs_since_best"].as_u64().unwrap_or(0) as usize;
    }
    let save = |name: &str,
                epochs: usize,
                step: u32,
                step_in_epoch: usize,
                metrics: serde_json::Value|
     -> Result<(), TrainError> {
        let Some(dir) = opts.run_dir else {
            return Ok(());
        };
        let ckpt = crate::checkpoint::Checkpoint {
            spec: spec.clone(),
            params: net.download(gpu)?,
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
            optim: Some(net.download_optim(gpu, cfg.optimizer, step as u64)?),
        };
        crate::checkpoint::save(&dir.join(name), &ckpt)?;
        Ok(())
    };
    // Steps per submission adapt so that one submission is ~0.25 s of work.
    let mut chunk = 4usize;

    for epoch in done_epochs + 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let mut perm = train_idx.clone();
        Rng::new(
            cfg.seed
                .wrapping_mul(0x9e37_79b9)
                .wrapping_add(epoch as u64),
        )
        .shuffle(&mut perm);
        gpu.write(&train_indices, &perm)?;
        let first = if epoch == done_epochs + 1 {
            skip_steps.min(steps_per_epoch)
        } else {
            0
        };
        gpu.write(
            &net.counter,
            &[epoch_start_step + first as u32, epoch_start_step],
        )?;
        gpu.write(&train_metrics, &[0f32; metrics::LEN])?;
        reporter.epoch_start(epoch, cfg.epochs);

        let mut recorded = first;
        let mut last: Option<readback::Snapshot> = None;
        while recorded < steps_per_epoch {
            if opts
                .stop
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
            {
                ring.drain(gpu)?;
                let path = opts
                    .run_dir
                    .map(|d| d.join("last.safetensors"))
                    .unwrap_or_default();
                save(
                    "last.safetensors",
                    epoch - 1,
                    epoch_start_step + recorded as u32,
                    recorded,
                    serde_json::json!({ "best_val_accuracy": finite_or_null(best_val), "epochs_since_best": since_best }),
                )?;
                return Err(TrainError::Interrupted { saved: path });
            }
            let n = chunk.min(steps_per_epoch - recorded);
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for s in recorded..recorded + n {
                    let plan = if s < steps_full {
                        &full_plan
                    } else {
                        &partial_plan
                    };
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
        let images = ((steps_per_epoch - first) * batch).min(train_idx.len());
        trained_images += images;
        epoch_start_step += steps_per_epoch as u32;
        let train = last
            .map(|s| Evaluation::from_metrics(&s.values))
            .unwrap_or(Evaluation {
                loss: f64::NAN,
                accuracy: f64::NAN,
                count: 0,
            });
        let val = match &val_eval {
            Some(e) => Some(e.run(gpu)?),
            None => None,
        };
        let record = EpochRecord {
            epoch,
            step: epoch_start_step as usize,
            train_loss: train.loss,
            train_accuracy: train.accuracy,
            val_loss: val.map(|v| v.loss),
            val_accuracy: val.map(|v| v.accuracy),
            seconds,
            images_per_second: images as f64 / seconds,
        };
        reporter.epoch_end(&record);
        let mut improved = false;
        if let Some(v) = val {
            if v.accuracy > best_val {
                best_val = v.accuracy;
                since_best = 0;
                improved = true;
            } else {
                since_best += 1;
            }
        }
        let mut metrics_json = serde_json::to_value(&record).unwrap_or_default();
        metrics_json["best_val_accuracy"] = finite_or_null(best_val);
        metrics_json["epochs_since_best"] = since_best.into();
        save(
            "last.safetensors",
            epoch,
            epoch_start_step,
            0,
            metrics_json.clone(),
        )?;
        if improved {
            save("best.safetensors", epoch, epoch_start_step, 0, metrics_json)?;
        }
        history.push(record);
        if val.is_some() && cfg.patience > 0 && since_best >= cfg.patience && epoch < cfg.epochs {
            reporter.message(&format!(
                "early stopping: validation accuracy has not improved for {} epochs (best {:.2} %)",
                cfg.patience,
                best_val * 100.0
            ));
            stopped_early = true;
            break;
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

fn finite_or_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        v.into()
    } else {
        serde_json::Value::Null
    }
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
        return Err(TrainError::Diverged {
            epoch,
            step: s.steps,
            loss,
            hint: "",
        });
    }
    Ok(())
}
