//! Softmax cross-entropy (`shaders/softmax_xent.wgsl`): the mean loss of a batch and its
//! correct-prediction count accumulated into a GPU metrics buffer, and the logits' gradient.

use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, SOFTMAX_XENT};
use bytemuck::{Pod, Zeroable};

/// Binding numbers of softmax_xent.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const LOGITS: u32 = 1;
    pub const LABELS: u32 = 2;
    pub const METRICS: u32 = 3;
    pub const DLOGITS: u32 = 4;
    pub const CONFUSION: u32 = 5;
    pub const COUNTER_RW: u32 = 6;
    pub const W: u32 = 7;
    pub const X: u32 = 8;
    pub const DX: u32 = 9;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    batch: u32,
    classes: u32,
    smoothing: f32,
    grad_scale: f32,
    counter_duty: u32,
    inputs: u32,
    mask_below: f32,
    _pad: u32,
}

/// What a loss dispatch does to a step counter (`kernels::optim`'s layout) besides the loss:
/// one invocation of it (in its only workgroup, or workgroup 0) writes the counter, which no
/// other kernel of the dispatch reads, so nothing races it.
#[derive(Clone, Copy, Default)]
pub enum CounterDuty<'a> {
    #[default]
    None,
    /// `[2] = [0]`: the step for the training step's update, which ends the step.
    Snapshot(&'a Tensor),
    /// `[0] += 1`: ends an evaluation step.
    Advance(&'a Tensor),
}

impl<'a> CounterDuty<'a> {
    fn code(&self) -> u32 {
        match self {
            CounterDuty::None => 0,
            CounterDuty::Snapshot(_) => 1,
            CounterDuty::Advance(_) => 2,
        }
    }
    fn counter(&self) -> Option<&'a Tensor> {
        match *self {
            CounterDuty::None => None,
            CounterDuty::Snapshot(c) | CounterDuty::Advance(c) => Some(c),
        }
    }
}

/// Layout of the metrics buffer the forward pass accumulates into.
pub mod metrics {
    /// Sum of per-example losses since the last reset.
    pub const LOSS_SUM: usize = 0;
    /// Number of correct predictions since the last reset.
    pub const CORRECT: usize = 1;
    /// Number of examples since the last reset.
    pub const COUNT: usize = 2;
    /// Mean loss of the most recent batch.
    pub const LAST_LOSS: usize = 3;
    pub const LEN: usize = 4;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XentShape {
    pub batch: usize,
    pub classes: usize,
    /// Label smoothing e in [0, 1): the target is (1 - e) * onehot + e / classes.
    pub smoothing: f32,
}

impl XentShape {
    fn describe(&self) -> String {
        format!("batch={} classes={}", self.batch, self.classes)
    }
    fn params(&self) -> Result<Params> {
        if self.batch == 0 || self.classes == 0 {
            return Err(GpuError::Shape {
                label: "softmax_xent".into(),
                message: format!("empty shape {}", self.describe()),
            });
        }
        Ok(Params {
            batch: dim("softmax_xent", self.batch)?,
            classes: dim("softmax_xent", self.classes)?,
            smoothing: self.smoothing,
            grad_scale: 1.0 / self.batch as f32,
            counter_duty: 0,
            inputs: 0,
            mask_below: f32::NEG_INFINITY,
            _pad: 0,
        })
    }
}

/// Adds this batch's loss sum, correct count and size to `metrics` (see [`metrics`]).
pub fn softmax_xent_forward(
    gpu: &Gpu,
    s: XentShape,
    logits: &Tensor,
    labels: &Tensor,
    metrics_buf: &Tensor,
    duty: CounterDuty,
) -> Result<Dispatch> {
    let desc = s.describe();
    check_len("softmax_xent_forward", &desc, logits, s.batch * s.classes)?;
    check_len("softmax_xent_forward", &desc, labels, s.batch)?;
    check_len("softmax_xent_forward", &desc, metrics_buf, metrics::LEN)?;
    let (p, dummy) = params_with_duty(gpu, s, duty)?;
    gpu.dispatch(
        &SOFTMAX_XENT,
        "softmax_xent_forward",
        &desc,
        &[
            (binding::P, &p),
            (binding::LOGITS, &logits),
            (binding::LABELS, &labels),
            (binding::METRICS, &metrics_buf),
            (binding::COUNTER_RW, duty.counter().unwrap_or(&dummy)),
        ],
        [1, 1, 1],
    )
}

/// The loss's parameters with the counter duty, and the dummy counter bound when it has none.
fn params_with_duty(gpu: &Gpu, s: XentShape, duty: CounterDuty) -> Result<(wgpu::Buffer, Tensor)> {
    if let Some(c) = duty.counter() {
        check_len("softmax_xent", "the step counter", c, 4)?;
    }
    let mut p = s.params()?;
    p.counter_duty = duty.code();
    Ok((
        gpu.uniform("softmax_xent params", &p),
        gpu.zeros("no counter", 4)?,
    ))
}

/// dlogits = (softmax(logits) - onehot(label)) / batch. Overwrites dlogits.
pub fn softmax_xent_backward(
    gpu: &Gpu,
    s: XentShape,
    logits: &Tensor,
    labels: &Tensor,
    dlogits: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    check_len("softmax_xent_backward", &desc, logits, s.batch * s.classes)?;
    check_len("softmax_xent_backward", &desc, labels, s.batch)?;
    check_len("softmax_xent_backward", &desc, dlogits, s.batch * s.classes)?;
    let p = gpu.uniform("softmax_xent params", &s.params()?);
    gpu.dispatch(
        &SOFTMAX_XENT,
        "softmax_xent_backward",
        &desc,
        &[
            (binding::P, &p),
            (binding::LOGITS, &logits),
            (binding::LABELS, &labels),
            (binding::DLOGITS, &dlogits),
        ],
        [s.batch.div_ceil(64) as u32, 1, 1],
    )
}

/// `softmax_xent_forward` and `softmax_xent_backward` in one dispatch (a training step's
/// loss): the same metrics and gradient, bit for bit.
pub fn softmax_xent_train(
    gpu: &Gpu,
    s: XentShape,
    logits: &Tensor,
    labels: &Tensor,
    metrics_buf: &Tensor,
    dlogits: &Tensor,
    duty: CounterDuty,
) -> Result<Dispatch> {
    let desc = s.describe();
    check_len("softmax_xent_train", &desc, logits, s.batch * s.classes)?;
    check_len("softmax_xent_train", &desc, labels, s.batch)?;
    check_len("softmax_xent_train", &desc, metrics_buf, metrics::LEN)?;
    check_len("softmax_xent_train", &desc, dlogits, s.batch * s.classes)?;
    let (p, dummy) = params_with_duty(gpu, s, duty)?;
    gpu.dispatch(
        &SOFTMAX_XENT,
        "softmax_xent_train",
        &desc,
        &[
            (binding::P, &p),
            (binding::LOGITS, &logits),
            (binding::LABELS, &labels),
            (binding::METRICS, &metrics_buf),
            (binding::DLOGITS, &dlogits),
            (binding::COUNTER_RW, duty.counter().unwrap_or(&dummy)),
        ],
        [1, 1, 1],
    )
}

/// The classifier whose input gradient `softmax_xent_train_input_grad` computes: the linear
/// layer `inputs -> classes` that produced the logits.
pub struct Classifier<'a> {
    pub inputs: usize,
    /// Its weight, `[classes, inputs]`.
    pub weight: &'a Tensor,
    /// Its input, `[batch, inputs]`.
    pub x: &'a Tensor,
    /// True when a ReLU produced x: dx is then 0 where x <= 0 (the ReLU's backward too).
    pub relu_input: bool,
    /// Overwritten with dL/dx.
    pub dx: &'a Tensor,
}

/// Rows of the batch per workgroup of `softmax_xent_train_input_grad` (its shader's ROWS).
const ROWS: usize = 4;

/// `softmax_xent_train` plus the classifier's input gradient dx = dlogits W (masked by the
/// ReLU before it), in one dispatch: the same metrics and dlogits, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_train_input_grad(
    gpu: &Gpu,
    s: XentShape,
    logits: &Tensor,
    labels: &Tensor,
    metrics_buf: &Tensor,
    dlogits: &Tensor,
    duty: CounterDuty,
    c: Classifier,
) -> Result<Dispatch> {
    let desc = format!("{} inputs={}", s.describe(), c.inputs);
    let name = "softmax_xent_train_input_grad";
    check_len(name, &desc, logits, s.batch * s.classes)?;
    check_len(name, &desc, labels, s.batch)?;
    check_len(name, &desc, metrics_buf, metrics::LEN)?;
    check_len(name, &desc, dlogits, s.batch * s.classes)?;
    check_len(name, &desc, c.weight, s.classes * c.inputs)?;
    check_len(name, &desc, c.x, s.batch * c.inputs)?;
    check_len(name, &desc, c.dx, s.batch * c.inputs)?;
    if let Some(counter) = duty.counter() {
        check_len("softmax_xent", "the step counter", counter, 4)?;
    }
    let mut p = s.params()?;
    p.counter_duty = duty.code();
    p.inputs = dim(name, c.inputs)?;
    p.mask_below = if c.relu_input { 0.0 } else { f32::NEG_INFINITY };
    let pb = gpu.uniform("softmax_xent params", &p);
    let dummy = gpu.zeros("no counter", 4)?;
    gpu.dispatch(
        &SOFTMAX_XENT,
        name,
        &desc,
        &[
            (binding::P, &pb),
            (binding::LOGITS, &logits),
            (binding::LABELS, &labels),
            (binding::METRICS, &metrics_buf),
            (binding::DLOGITS, &dlogits),
            (binding::COUNTER_RW, duty.counter().unwrap_or(&dummy)),
            (binding::W, c.weight),
            (binding::X, c.x),
            (binding::DX, c.dx),
        ],
        [s.batch.div_ceil(ROWS) as u32, 1, 1],
    )
}

/// Adds each row's (label, prediction) to the `classes x classes` confusion counts (u32).
pub fn confusion_accumulate(
    gpu: &Gpu,
    s: XentShape,
    logits: &Tensor,
    labels: &Tensor,
    confusion: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    check_len("confusion_accumulate", &desc, logits, s.batch * s.classes)?;
    check_len("confusion_accumulate", &desc, labels, s.batch)?;
    check_len(
        "confusion_accumulate",
        &desc,
        confusion,
        s.classes * s.classes,
    )?;
    let p = gpu.uniform("confusion params", &s.params()?);
    gpu.dispatch(
        &SOFTMAX_XENT,
        "confusion_accumulate",
        &desc,
        &[
            (binding::P, &p),
            (binding::LOGITS, &logits),
            (binding::LABELS, &labels),
            (binding::CONFUSION, &confusion),
        ],
        [s.batch.div_ceil(64) as u32, 1, 1],
    )
}

/// CPU reference of `confusion_accumulate`.
pub fn confusion_reference(confusion: &mut [u32], logits: &[f32], labels: &[u32], s: XentShape) {
    for r in 0..s.batch {
        let row = &logits[r * s.classes..(r + 1) * s.classes];
        let pred = (0..s.classes).fold(0, |best, j| if row[j] > row[best] { j } else { best });
        confusion[labels[r] as usize * s.classes + pred] += 1;
    }
}

/// Returns (sum of losses, number correct) and writes the gradient of the mean loss.
pub fn softmax_xent_reference(
    dlogits: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    s: XentShape,
) -> (f64, usize) {
    let mut loss = 0f64;
    let mut correct = 0;
    for r in 0..s.batch {
        let row = &logits[r * s.classes..(r + 1) * s.classes];
        let mut argmax = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[argmax] {
                argmax = j;
            }
        }
        let m = row[argmax] as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let label = labels[r] as usize;
        let e = s.smoothing as f64;
        let uniform = e / s.classes as f64;
        let target: f64 = row
            .iter()
            .enumerate()
            .map(|(j, &v)| v as f64 * (uniform + if j == label { 1.0 - e } else { 0.0 }))
            .sum();
        loss += lse - target;
        correct += usize::from(argmax == label);
        for (j, &v) in row.iter().enumerate() {
            let prob = (v as f64 - lse).exp();
            let target = uniform + if j == label { 1.0 - e } else { 0.0 };
            dlogits[r * s.classes + j] = ((prob - target) / s.batch as f64) as f32;
        }
    }
    (loss, correct)
}
