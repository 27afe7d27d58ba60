//! Activation and gradient buffers of one batch size, laid out by the step list: one tensor
//! between each pair of steps, plus what single steps keep for their backward.

use super::fuse::{self, Mode, Op, Step};
use crate::gpu::{Gpu, GpuError, Result, Tensor};
use crate::kernels::conv2d_pool;
use crate::model::ModelSpec;

pub struct Buffers {
    pub batch: usize,
    pub mode: Mode,
    pub steps: Vec<Step>,
    /// `acts[k]` is step k's input, `acts[steps.len()]` the logits; `acts[0]` the batch.
    pub acts: Vec<Tensor>,
    /// Training only: `grads[k]` is the gradient of `acts[k]`. None for the input batch,
    /// unless the first step's backward writes it (a batch norm there).
    pub grads: Vec<Option<Tensor>>,
    pub labels: Tensor,
    /// Per step: a pool's argmax (with the gradient gates in its top bits).
    pub argmax: Vec<Option<Tensor>>,
    /// Per step: the batch statistics a batch norm (its own step or fused into a pool)
    /// saves for its backward: the mean at `[c]`, 1/sqrt(var + eps) at `[C + c]`.
    pub bn_saved: Vec<Option<Tensor>>,
    /// Per step, training only: the gradient of a fused batch norm's output, where the
    /// pool's backward does not run through the batch norm (overlapping windows).
    pub bn_grad: Vec<Option<Tensor>>,
    /// Per step: a pool's per-row sums of its input gradient, when it computes the bias
    /// gradient of the convolution before it.
    pub row_sums: Vec<Option<Tensor>>,
    /// Per step: the packed weight table of a convolution that runs its pool's forward.
    pub conv_table: Vec<Option<Tensor>>,
}

impl Buffers {
    pub fn new(gpu: &Gpu, spec: &ModelSpec, batch: usize, mode: Mode) -> Result<Buffers> {
        let steps = fuse::steps(spec, mode);
        let train = mode == Mode::Train;
        let mut acts = vec![gpu.zeros("input batch", batch * spec.shapes[0].len())?];
        // Each tensor's length; a convolution that runs its pool's forward never writes its
        // own output, which then gets no memory (its gradient still does).
        let mut lens = vec![acts[0].len];
        let (mut argmax, mut bn_saved, mut bn_grad) = (vec![], vec![], vec![]);
        let (mut row_sums, mut conv_table) = (vec![], vec![]);
        for (k, s) in steps.iter().enumerate() {
            let out = batch * spec.output(s.last).len();
            let name = format!("{}.{}", s.last, spec.layers[s.last]);
            lens.push(out);
            let unwritten = fuse::pool_forward_in_step(&steps, k);
            acts.push(gpu.zeros(
                &format!("step {k} output ({name})"),
                if unwritten { 0 } else { out },
            )?);
            conv_table.push(if fuse::pool_forward_in_step(&steps, k) {
                Some(gpu.uniform_table(&format!("{name} weight table"), conv2d_pool::TABLE_LEN)?)
            } else {
                None
            });
            row_sums.push(match s.op {
                Op::MaxPool { fused, .. } if fused.conv_bias.is_some() => {
                    let input = spec.input(s.first);
                    let out_rows = spec.output(s.last).h;
                    Some(gpu.zeros(&format!("{name} row sums"), batch * input.c * out_rows)?)
                }
                _ => None,
            });
            let (pool, bn, bn_gradient) = match s.op {
                Op::MaxPool { fused, .. } => (
                    true,
                    fused.batch_norm,
                    train && fused.batch_norm.is_some() && !fused.batch_norm_backward,
                ),
                Op::BatchNorm { layer } => (false, Some(layer), false),
                _ => (false, None, false),
            };
            argmax.push(if pool {
                Some(gpu.zeros(&format!("{name} argmax"), out)?)
            } else {
                None
            });
            bn_saved.push(match bn {
                Some(j) => Some(gpu.zeros(&format!("{j}.bn saved stats"), 2 * spec.output(j).c)?),
                None => None,
            });
            bn_grad.push(match bn {
                Some(j) if bn_gradient => Some(gpu.zeros(
                    &format!("grad of {j}.bn output"),
                    batch * spec.output(j).len(),
                )?),
                _ => None,
            });
        }
        let grads = if train {
            let first_writes = steps.first().is_some_and(Step::writes_input_gradient);
            acts.iter()
                .enumerate()
                .map(|(k, a)| {
                    if k == 0 && !first_writes {
                        Ok(None)
                    } else {
                        gpu.zeros(&format!("grad of {}", a.label), lens[k])
                            .map(Some)
                    }
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![]
        };
        Ok(Buffers {
            batch,
            mode,
            steps,
            acts,
            grads,
            labels: gpu.zeros("labels", batch)?,
            argmax,
            bn_saved,
            bn_grad,
            row_sums,
            conv_table,
        })
    }

    pub fn input(&self) -> &Tensor {
        &self.acts[0]
    }

    pub fn logits(&self) -> &Tensor {
        self.acts.last().expect("the input batch is always there")
    }

    /// The loss's gradient to the logits (training buffers only).
    pub fn logits_grad(&self) -> &Tensor {
        self.grads
            .last()
            .and_then(Option::as_ref)
            .expect("training buffers have a logits gradient")
    }
}

/// Errors, before anything is allocated, if a layer's parameters exceed what the adapter
/// allows in one binding: the model is the cause (not the batch size), and the error says so.
pub fn check_model(gpu: &Gpu, spec: &ModelSpec) -> Result<()> {
    let limit = binding_limit(gpu);
    for (i, layer) in spec.layers.iter().enumerate() {
        let params = spec.param_count(i);
        let bytes = 4 * params as u64;
        if bytes > limit {
            return Err(GpuError::ModelTooLarge {
                layer: format!("{i} `{layer}`"),
                params,
                bytes,
                limit,
            });
        }
    }
    Ok(())
}

/// Errors, before anything is allocated, if `batch` examples need a tensor larger than the
/// adapter allows in one binding (the input batch or any layer's output); the batch size,
/// set by `flag`, is then the cause.
pub fn check_batch(gpu: &Gpu, spec: &ModelSpec, batch: usize, flag: &'static str) -> Result<()> {
    let limit = binding_limit(gpu);
    for (i, shape) in spec.shapes.iter().enumerate() {
        let bytes = batch as u128 * shape.len() as u128 * 4;
        if bytes > limit as u128 {
            let what = match i {
                0 => "the input batch".to_string(),
                _ => format!("the output of layer {} `{}`", i - 1, spec.layers[i - 1]),
            };
            return Err(GpuError::BatchTooLarge {
                what,
                batch,
                size: bytes.min(u64::MAX as u128) as u64,
                limit,
                flag,
            });
        }
    }
    Ok(())
}

/// What a run keeps on the GPU at once, in bytes, by kind (`check_memory`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryNeed {
    /// Training: every step's output and its gradient for one batch.
    pub train_batch: u64,
    /// Evaluation: every step's output for one evaluation batch.
    pub eval_batch: u64,
    /// Parameters, their gradients and the optimizer's state (two moments for Adam).
    pub params: u64,
    /// The data set resident on the GPU.
    pub data: u64,
}

impl MemoryNeed {
    /// A lower bound of what training `spec` at `batch` (evaluating at `eval_batch`, 0 when
    /// there is no training) with `data` bytes of images holds: the fused steps' scratch
    /// and small tensors come on top, so a refusal is never wrong.
    pub fn of(spec: &ModelSpec, batch: usize, eval_batch: usize, data: u64) -> MemoryNeed {
        // What `Buffers::new` allocates per example: the input and each step's output (and
        // in training each one's gradient); fused steps keep no tensors in between.
        let per_example = |mode| -> u64 {
            let steps = fuse::steps(spec, mode);
            let outputs: usize = steps.iter().map(|s| spec.output(s.last).len()).sum();
            4 * (spec.shapes[0].len() + outputs) as u64
        };
        let params: u64 = (0..spec.layers.len())
            .map(|i| spec.param_count(i) as u64 * 4)
            .sum();
        let training = batch > 0;
        MemoryNeed {
            train_batch: match training {
                true => 2 * batch as u64 * per_example(Mode::Train),
                false => 0,
            },
            eval_batch: eval_batch as u64 * per_example(Mode::Eval),
            params: if training { 4 * params } else { params },
            data,
        }
    }

    pub fn total(&self) -> u64 {
        self.train_batch + self.eval_batch + self.params + self.data
    }
}

/// Errors, before anything is allocated, if what a run keeps on the GPU together exceeds
/// the adapter's device memory (where the backend reports it): each tensor may fit in a
/// binding while all of them do not fit in the GPU. Blames `flag` (the batch that holds
/// the most).
pub fn check_memory(gpu: &Gpu, what: &str, need: MemoryNeed, flag: &'static str) -> Result<()> {
    let Some(have) = gpu.device_memory else {
        return Ok(());
    };
    if need.total() <= have {
        return Ok(());
    }
    let g = crate::gpu::gib;
    let mut parts = vec![];
    if need.train_batch > 0 {
        parts.push(format!("activations and gradients {}", g(need.train_batch)));
    }
    if need.eval_batch > 0 {
        parts.push(format!("evaluation batch {}", g(need.eval_batch)));
    }
    parts.push(format!("parameters {}", g(need.params)));
    if need.data > 0 {
        parts.push(format!("data {}", g(need.data)));
    }
    Err(GpuError::OutOfDeviceMemory {
        what: what.to_string(),
        parts: parts.join(", "),
        need: need.total(),
        have,
        adapter: gpu.info.name.clone(),
        flag,
    })
}

fn binding_limit(gpu: &Gpu) -> u64 {
    let l = &gpu.limits;
    l.max_storage_buffer_binding_size.min(l.max_buffer_size)
}
