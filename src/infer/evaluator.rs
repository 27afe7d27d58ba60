//! Data on the GPU and evaluation passes: a split uploaded once as u8, the held-out
//! validation choice, and an evaluator that runs eval-mode plans over a list of examples,
//! counting loss, accuracy (and, when asked, the confusion matrix) on the GPU.

use crate::data::Split;
use crate::gpu::{Gpu, GpuError, Tensor};
use crate::kernels::data::{pack_bytes, GatherConfig};
use crate::kernels::softmax_xent::metrics;
use crate::net::{self, Buffers, Mode, Network, PlanInputs, Source, StepPlans};
use crate::rng::Rng;

/// Loss and accuracy of one pass over a split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
}

impl Evaluation {
    pub fn from_metrics(m: &[f32]) -> Evaluation {
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

/// Splits the training set: a seeded choice of `val` images held out, the rest trained on.
pub fn split_indices(n: usize, val: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut all: Vec<u32> = (0..n as u32).collect();
    // Salt: the held-out choice must not follow the epoch permutations' stream.
    Rng::new(seed ^ 0x7a1d_a7e5).shuffle(&mut all);
    let val = val.min(n);
    let mut train = all[val..].to_vec();
    let mut held = all[..val].to_vec();
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

/// Evaluation plans for one split at a fixed batch size (plus a partial last batch).
pub struct Evaluator {
    // The plans reference these buffers; the evaluator owns them for its lifetime.
    _bufs: Buffers,
    _indices: Tensor,
    counter: Tensor,
    metrics: Tensor,
    confusion: Option<Tensor>,
    /// Flip TTA: the mirrored view's logits, kept for the mean.
    _mirrored: Option<Tensor>,
    plans: StepPlans,
}

impl Evaluator {
    /// Evaluates `indices` of `split` (eval mode) in batches of `batch`; with `flip_tta`,
    /// on the mean logits of each image and its mirror image.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        net: &Network,
        split: &GpuSplit,
        indices: &[u32],
        batch: usize,
        mean: f32,
        std: f32,
        flip_tta: bool,
    ) -> Result<Evaluator, GpuError> {
        Self::with_confusion(gpu, net, split, indices, batch, mean, std, false, flip_tta)
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
        flip_tta: bool,
    ) -> Result<Evaluator, GpuError> {
        let batch = batch.min(indices.len()).max(1);
        let bufs = Buffers::new(gpu, &net.spec, batch, Mode::Eval)?;
        let counter = crate::kernels::optim::step_counter(gpu, "eval counter")?;
        let idx = gpu.upload("eval indices", indices)?;
        let metrics_t = gpu.zeros("eval metrics", metrics::LEN)?;
        let inputs = PlanInputs {
            source: Source {
                images: &split.images,
                labels: &split.labels,
                indices: &idx,
                counter: &counter,
            },
            gather: GatherConfig {
                batch,
                mean,
                std,
                flip: false,
                max_shift: 0,
                seed: 0,
                stride: batch,
            },
            metrics: &metrics_t,
            dropout_seed: 0,
            label_smoothing: 0.0,
            augment: None,
        };
        let classes = crate::model::NUM_CLASSES;
        let conf = if confusion {
            Some(gpu.zeros("confusion", classes * classes)?)
        } else {
            None
        };
        let classes = crate::model::NUM_CLASSES;
        let mirrored = match flip_tta {
            true => Some(gpu.zeros("mirrored logits", batch * classes)?),
            false => None,
        };
        let plans = StepPlans::build(indices.len(), batch, |n| match &mirrored {
            Some(m) => net::eval_step_flip_tta(gpu, net, &bufs, &inputs, n, conf.as_ref(), m),
            None => net::eval_step(gpu, net, &bufs, &inputs, n, conf.as_ref()),
        })?;
        Ok(Evaluator {
            _bufs: bufs,
            counter,
            _indices: idx,
            metrics: metrics_t,
            confusion: conf,
            _mirrored: mirrored,
            plans,
        })
    }

    /// The confusion counts of the last `run` (row = label, column = prediction).
    pub fn confusion(&self, gpu: &Gpu) -> Result<Option<Vec<u32>>, GpuError> {
        pollster::block_on(self.confusion_async(gpu))
    }

    pub async fn confusion_async(&self, gpu: &Gpu) -> Result<Option<Vec<u32>>, GpuError> {
        Ok(match &self.confusion {
            Some(c) => Some(gpu.read_async::<u32>(c).await?),
            None => None,
        })
    }

    pub fn run(&self, gpu: &Gpu) -> Result<Evaluation, GpuError> {
        pollster::block_on(self.run_async(gpu))
    }

    /// `run`, awaiting the metrics' readback (what a browser needs).
    pub async fn run_async(&self, gpu: &Gpu) -> Result<Evaluation, GpuError> {
        gpu.write(&self.counter, &[0u32, 0])?;
        gpu.write(&self.metrics, &[0f32; metrics::LEN])?;
        if let Some(c) = &self.confusion {
            gpu.write(c, &vec![0u32; c.len])?;
        }
        // Several submissions so a long evaluation never holds one huge command buffer.
        let per_submit = 64;
        let steps = self.plans.steps();
        let mut done = 0;
        while done < steps {
            let n = per_submit.min(steps - done);
            gpu.queue
                .submit([self.plans.encode(gpu, done..done + n).finish()]);
            done += n;
        }
        let m: Vec<f32> = gpu.read_async(&self.metrics).await?;
        Ok(Evaluation::from_metrics(&m))
    }
}
