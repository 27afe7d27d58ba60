//! The trainer: everything on the GPU. The data set is uploaded once as u8; each epoch
//! uploads only a permutation; many steps are recorded per submission; loss and accuracy
//! accumulate on the GPU and are read back through a ring of staging buffers without
//! stalling the queue.

mod figures;
mod save;

use figures::{check_loss, progress};

use super::milestones::{self, TimeToAccuracy};
use super::readback::{MetricsRing, Snapshot};
use super::schedule::{Plateau, Schedule};
use super::{ConfigError, EpochRecord, Reporter, RunOptions, TrainConfig};
use super::{TrainError, TrainOutcome};
use crate::data::Dataset;
use crate::gpu::{Gpu, Tensor};
use crate::infer::{split_indices, Evaluation, Evaluator, GpuSplit};
use crate::kernels::augment::{Augment, Workspace};
use crate::kernels::data::GatherConfig;
use crate::kernels::softmax_xent::metrics;
use crate::model::{Layer, ModelSpec};
use crate::net::{self, Buffers, Mode, Network, PlanInputs, Source, StepPlans};
use crate::rng::Rng;
use std::sync::atomic::Ordering;
use web_time::Instant;

/// Salts that give the gather's augmentation and the dropout masks their own hash streams
/// from one run seed (the same seed must not draw the same numbers for both).
const AUGMENT_SALT: u32 = 0x0a06;
const DROPOUT_SALT: u32 = 0xd0;

/// One run's GPU state and progress.
pub struct Trainer<'a> {
    gpu: &'a Gpu,
    cfg: &'a TrainConfig,
    opts: &'a RunOptions<'a>,
    spec: ModelSpec,
    net: Network,
    batch: usize,
    train_idx: Vec<u32>,
    // The plans reference these; the trainer owns them for its lifetime.
    _bufs: (Buffers, Option<Workspace>),
    _data: (GpuSplit, GpuSplit),
    /// The learning rate of every step of the run (`lr[global step]`, read on the GPU).
    lr_table: Tensor,
    schedule: Schedule,
    plateau: Plateau,
    train_indices: Tensor,
    train_metrics: Tensor,
    plans: StepPlans,
    val: Option<(Evaluator, usize)>,
    test: (Evaluator, usize),
    ring: MetricsRing,
    /// Epochs completed before this process started (resume), steps into the next one.
    done_epochs: usize,
    skip_steps: usize,
    /// The global step at which the current epoch starts.
    epoch_start_step: u32,
    best_val: f64,
    since_best: usize,
    history: Vec<EpochRecord>,
    train_seconds: f64,
    /// Training and wall seconds of the run before this process (resume).
    prior_seconds: (f64, f64),
    time_to_accuracy: TimeToAccuracy,
    trained_images: usize,
    /// Steps per submission, adapted so that one submission is ~0.25 s of work.
    chunk: usize,
    started: Instant,
}

impl<'a> Trainer<'a> {
    /// Uploads the data, builds the network (fresh or from `opts.resume`) and its plans.
    pub fn new(
        gpu: &'a Gpu,
        cfg: &'a TrainConfig,
        data: &Dataset,
        opts: &'a RunOptions<'a>,
    ) -> Result<Trainer<'a>, TrainError> {
        let started = Instant::now();
        let spec = cfg.model_spec()?;
        let limit = |split: &crate::data::Split, n: usize| {
            if n > 0 {
                split.take(n)
            } else {
                split.clone()
            }
        };
        let train_split = limit(&data.train, cfg.limit_train);
        let test_split = limit(&data.test, cfg.limit_test);
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
        if batch == 1 && spec.layers.iter().any(|l| matches!(l, Layer::BatchNorm)) {
            return Err(ConfigError::Invalid {
                flag: "--batch-size",
                message: "batch norm needs batches of at least 2".into(),
            }
            .into());
        }
        crate::net::check_model(gpu, &spec)?;
        crate::net::check_batch(gpu, &spec, batch, "--batch-size")?;
        let eval_batch = cfg
            .eval_batch_size
            .min(train_split.len().max(test_split.len()));
        crate::net::check_batch(gpu, &spec, eval_batch, "--eval-batch-size")?;
        // Images stay on the GPU as bytes, labels as u32.
        let examples = (train_split.len() + test_split.len()) as u64;
        let need = crate::net::MemoryNeed::of(&spec, batch, eval_batch, examples * (784 + 4));
        let flag = match need.train_batch >= need.eval_batch {
            true => "--batch-size",
            false => "--eval-batch-size",
        };
        let what = format!("training at batch {batch} (evaluating at {eval_batch})");
        crate::net::check_memory(gpu, &what, need, flag)?;
        let init = match opts.resume {
            Some(c) if c.spec.layers != spec.layers => {
                return Err(TrainError::Resume(format!(
                    "the checkpoint holds `{}`, the configuration `{}`",
                    c.spec.to_text(),
                    spec.to_text()
                )))
            }
            Some(c) => c.training_params(),
            None => match opts.init {
                Some(params) => params.to_vec(),
                None => spec.init_params(cfg.seed),
            },
        };
        let mut net = Network::new(gpu, spec.clone(), &init)?;
        if let Some(decay) = cfg.ema {
            // A resumed average goes on from the checkpoint's model tensors.
            let from = opts.resume.map_or(&init, |c| &c.params);
            net.start_average(gpu, decay, from)?;
        }
        let (done_epochs, skip_steps, epoch_start_step) = match opts.resume {
            Some(c) => {
                if let Some(o) = &c.optim {
                    if o.kind != Some(cfg.optimizer) {
                        return Err(TrainError::Resume(format!(
                            "the checkpoint's optimizer state is for {}, the run uses {}",
                            o.kind.map_or("no optimizer".into(), |k| k.to_string()),
                            cfg.optimizer
                        )));
                    }
                    net.upload_optim(gpu, o)?;
                }
                let m = &c.meta;
                (
                    m.epoch,
                    m.step_in_epoch,
                    (m.step - m.step_in_epoch as u64) as u32,
                )
            }
            None => (0, 0, 0),
        };
        let (mut best_val, mut since_best) = (f64::NEG_INFINITY, 0);
        let (mut prior_seconds, mut time_to_accuracy) = ((0.0, 0.0), TimeToAccuracy::default());
        if let Some(c) = opts.resume {
            let m: serde_json::Value = serde_json::from_str(&c.meta.metrics).unwrap_or_default();
            best_val = m["best_val_accuracy"].as_f64().unwrap_or(f64::NEG_INFINITY);
            since_best = m["epochs_since_best"].as_u64().unwrap_or(0) as usize;
            let seconds = |k: &str| m[k].as_f64().unwrap_or(0.0);
            prior_seconds = (
                seconds("train_seconds_total"),
                seconds("wall_seconds_total"),
            );
            time_to_accuracy =
                serde_json::from_value(m["time_to_val_accuracy"].clone()).unwrap_or_default();
        }

        let gtrain = GpuSplit::upload(gpu, "train", &train_split)?;
        let gtest = GpuSplit::upload(gpu, "test", &test_split)?;
        let train_indices = gpu.upload("train permutation", &train_idx)?;
        let train_metrics = gpu.zeros("train metrics", metrics::LEN)?;
        let schedule = Schedule::parse(&cfg.schedule).map_err(|e| ConfigError::Invalid {
            flag: "--schedule",
            message: e.message,
        })?;
        let plateau: Plateau = opts
            .resume
            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c.meta.metrics).ok())
            .and_then(|m| serde_json::from_value(m["plateau"].clone()).ok())
            .unwrap_or_default();
        let steps_per_epoch = train_idx.len().div_ceil(batch);
        let lr = gpu.upload(
            "learning rate",
            &schedule.table(cfg.lr as f64, steps_per_epoch, cfg.epochs, plateau.scale),
        )?;
        let seed32 = (cfg.seed ^ (cfg.seed >> 32)) as u32;
        let bufs = Buffers::new(gpu, &spec, batch, Mode::Train)?;
        let augment = Augment::parse(&cfg.augment).map_err(|e| ConfigError::Invalid {
            flag: "--augment",
            message: e.to_string(),
        })?;
        // The atlas (50 MB for the 60,000 images) only when augmenting.
        let augment_ws = match augment.is_on() {
            true => Some(Workspace::new(gpu, batch, &train_split.images.pixels)?),
            false => None,
        };
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
                seed: seed32 ^ AUGMENT_SALT,
                stride: batch,
            },
            metrics: &train_metrics,
            dropout_seed: seed32 ^ DROPOUT_SALT,
            label_smoothing: cfg.label_smoothing,
            augment: augment_ws.as_ref().map(|ws| (augment, ws)),
        };
        let opt = cfg.optimizer_config();
        let plans = StepPlans::build(train_idx.len(), batch, |n| {
            net::train_step(gpu, &net, &bufs, &inputs, &opt, &lr, n)
        })?;
        // With --ema, evaluation binds the averages.
        let averaged = net.averaged();
        let evaluated = averaged.as_ref().unwrap_or(&net);
        let evaluator = |split: &GpuSplit, ids: &[u32]| {
            Evaluator::new(
                gpu,
                evaluated,
                split,
                ids,
                cfg.eval_batch_size,
                cfg.input_mean,
                cfg.input_std,
                cfg.tta == super::config::Tta::Flip,
            )
            .map(|e| (e, ids.len()))
        };
        let val = match val_idx.is_empty() {
            true => None,
            false => Some(evaluator(&gtrain, &val_idx)?),
        };
        let test = evaluator(&gtest, &(0..gtest.len as u32).collect::<Vec<_>>())?;
        gpu.sync()?;
        let ring = MetricsRing::new(gpu, 3);
        Ok(Trainer {
            gpu,
            cfg,
            opts,
            spec,
            net,
            batch,
            train_idx,
            _bufs: (bufs, augment_ws),
            _data: (gtrain, gtest),
            lr_table: lr,
            schedule,
            plateau,
            train_indices,
            train_metrics,
            plans,
            val,
            test,
            ring,
            done_epochs,
            skip_steps,
            epoch_start_step,
            best_val,
            since_best,
            history: Vec::new(),
            train_seconds: 0.0,
            prior_seconds,
            time_to_accuracy,
            trained_images: 0,
            chunk: 4,
            started,
        })
    }

    /// Trains the remaining epochs (stopping early when validation stalls), then tests.
    pub fn run(self, reporter: &mut dyn Reporter) -> Result<TrainOutcome, TrainError> {
        pollster::block_on(self.run_async(reporter))
    }

    /// `run`, awaiting every readback: what a browser needs, whose readbacks land only once
    /// control returns to its event loop (natively the awaits return at once).
    pub async fn run_async(
        mut self,
        reporter: &mut dyn Reporter,
    ) -> Result<TrainOutcome, TrainError> {
        let val_len = self.val.as_ref().map_or(0, |v| v.1);
        reporter.start(
            self.cfg,
            &self.spec,
            self.train_idx.len(),
            val_len,
            self.test.1,
            self.plans.steps(),
        );
        let (mut stopped_early, mut reached_target) = (false, false);
        for epoch in self.done_epochs + 1..=self.cfg.epochs {
            let record = self.epoch(epoch, reporter).await?;
            reporter.epoch_end(&record);
            let target = self.cfg.target_accuracy;
            if let Some(acc) = record.val_accuracy {
                let (train, wall) = (record.train_seconds_total, record.wall_seconds_total);
                self.time_to_accuracy.observe(acc, target, train, wall);
                reached_target = target.is_some_and(|t| milestones::reaches(acc, t));
            }
            self.end_epoch(&record)?;
            self.history.push(record);
            if let (true, Some(t)) = (reached_target, target) {
                let train = self.time_to_accuracy.training[&milestones::key(t)];
                reporter.message(&format!(
                    "target reached: validation accuracy {:.2} % >= {t} % after epoch {epoch} ({train:.1} s of training)",
                    self.history.last().and_then(|r| r.val_accuracy).unwrap_or(0.0) * 100.0
                ));
                break;
            }
            let patience = self.cfg.patience;
            if val_len > 0 && patience > 0 && self.since_best >= patience && epoch < self.cfg.epochs
            {
                reporter.message(&format!(
                    "early stopping: validation accuracy has not improved for {patience} epochs (best {:.2} %)",
                    self.best_val * 100.0
                ));
                stopped_early = true;
                break;
            }
        }
        self.finish(stopped_early, reached_target).await
    }

    /// One epoch of training, then validation. Returns the epoch's record.
    async fn epoch(
        &mut self,
        epoch: usize,
        reporter: &mut dyn Reporter,
    ) -> Result<EpochRecord, TrainError> {
        let (gpu, steps) = (self.gpu, self.plans.steps());
        let epoch_start = Instant::now();
        let mut perm = self.train_idx.clone();
        // Each epoch's order from (run seed, epoch): a resumed run reshuffles identically.
        // The multiplier (2^32 / golden ratio) spreads consecutive seeds apart.
        let seed = self
            .cfg
            .seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(epoch as u64);
        Rng::new(seed).shuffle(&mut perm);
        gpu.write(&self.train_indices, &perm)?;
        // Resumed mid-epoch: skip the steps already taken.
        let first = if epoch == self.done_epochs + 1 {
            self.skip_steps.min(steps)
        } else {
            0
        };
        let start_step = self.epoch_start_step;
        gpu.write(&self.net.counter, &[start_step + first as u32, start_step])?;
        gpu.write(&self.train_metrics, &[0f32; metrics::LEN])?;
        reporter.epoch_start(epoch, self.cfg.epochs);

        let mut recorded = first;
        let mut last: Option<Snapshot> = None;
        // Metrics copies that landed: checked, reported, the newest kept.
        let max_loss = self.cfg.max_loss;
        let report =
            |snaps: Vec<Snapshot>, reporter: &mut dyn Reporter, last: &mut Option<Snapshot>| {
                for snap in snaps {
                    check_loss(&snap, epoch, max_loss)?;
                    reporter.progress(&progress(&snap, steps, epoch_start));
                    *last = Some(snap);
                }
                Ok::<_, TrainError>(())
            };
        while recorded < steps {
            if self.opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                self.ring.drain_async(gpu).await?;
                return Err(self.interrupted(epoch, recorded));
            }
            let n = match self.opts.step_metrics {
                true => 1,
                false => self.chunk.min(steps - recorded),
            };
            let encoder = self.plans.encode(gpu, recorded..recorded + n);
            recorded += n;
            let t0 = Instant::now();
            let landed = self
                .ring
                .submit_async(gpu, encoder, &self.train_metrics, recorded)
                .await?;
            report(landed, reporter, &mut last)?;
            // Adapt the chunk from the observed rate once the pipeline is full.
            if let Some(s) = last {
                let rate = s.steps as f64 / epoch_start.elapsed().as_secs_f64().max(1e-3);
                self.chunk = ((rate * 0.25) as usize).clamp(1, 256);
            } else if t0.elapsed().as_secs_f64() < 0.05 {
                self.chunk = (self.chunk * 2).min(256);
            }
        }
        report(self.ring.drain_async(gpu).await?, reporter, &mut last)?;
        let seconds = epoch_start.elapsed().as_secs_f64();
        self.train_seconds += seconds;
        let images = ((steps - first) * self.batch).min(self.train_idx.len());
        self.trained_images += images;
        self.epoch_start_step += steps as u32;
        let train = last.map_or(
            Evaluation {
                loss: f64::NAN,
                accuracy: f64::NAN,
                count: 0,
            },
            |s| Evaluation::from_metrics(&s.values),
        );
        let val = self.evaluate().await?;
        Ok(EpochRecord {
            epoch,
            step: self.epoch_start_step as usize,
            train_loss: train.loss,
            train_accuracy: train.accuracy,
            val_loss: val.map(|v| v.loss),
            val_accuracy: val.map(|v| v.accuracy),
            seconds,
            train_seconds_total: self.prior_seconds.0 + self.train_seconds,
            wall_seconds_total: self.prior_seconds.1 + self.started.elapsed().as_secs_f64(),
            images_per_second: images as f64 / seconds,
            lr: self.lr_of(self.epoch_start_step as usize - 1),
            gpu_memory: self.gpu.memory(),
        })
    }

    /// The learning rate the table holds for global step `t`.
    fn lr_of(&self, t: usize) -> f64 {
        let base = self.cfg.lr as f64;
        self.schedule
            .lr_at(base, t, self.plans.steps(), self.cfg.epochs)
            * self.plateau.scale
    }

    /// The validation pass (None without a validation split).
    async fn evaluate(&self) -> Result<Option<Evaluation>, TrainError> {
        self.net.sync_average(self.gpu)?;
        Ok(match &self.val {
            Some((e, _)) => Some(e.run_async(self.gpu).await?),
            None => None,
        })
    }

    /// The test pass and the final parameters.
    async fn finish(
        self,
        stopped_early: bool,
        reached_target: bool,
    ) -> Result<TrainOutcome, TrainError> {
        self.net.sync_average(self.gpu)?;
        let test = self.test.0.run_async(self.gpu).await?;
        Ok(TrainOutcome {
            params: self.model_params_async().await?,
            epochs_run: self.history.len(),
            history: self.history,
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            images_per_second: self.trained_images as f64 / self.train_seconds.max(1e-9),
            wall_seconds: self.started.elapsed().as_secs_f64(),
            stopped_early,
            reached_target,
            time_to_accuracy: self.time_to_accuracy,
        })
    }
}
