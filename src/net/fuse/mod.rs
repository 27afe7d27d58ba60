//! Fusion: the model's layer list compiled into the list of steps the GPU runs. Every rule
//! about which layers run inside another layer's kernels lives here; the buffers, the
//! recorded plans, `summary` and `bench` all read the step list.
//!
//! A ReLU right after a linear or convolution step runs as that step stores its output,
//! and its backward where the next step (or the one after a dropout) stores its input
//! gradient (`relu_fused`).
//!
//! Around max pooling (see `kernels::pool::PoolFusion`): up to one
//! ReLU and one dropout right before a pool, a batch norm right before those (its
//! normalisation runs in the pool's forward; its statistics keep their own pass), and one
//! dropout right after it. Their tensors are never written. With tiling windows
//! (k == stride) the batch norm's backward runs inside the pool's backward too (its
//! gradient is zero except at the argmax elements); without a batch norm, when the pool
//! reads a convolution's output, the convolution's bias gradient does (it is the sum of
//! what the pool's backward writes).
//!
//! A 1-channel 3x3 convolution followed by a 2x2 pool (with at most a ReLU between) runs
//! as one kernel in the convolution's step (`kernels::conv2d_pool`).
//!
//! A flatten, and a dropout when evaluating, are no steps at all: they do not change the
//! data, so the tensors before and after them are the same buffer.

use super::shapes;
use crate::kernels::conv2d_pool;
use crate::model::{Layer, ModelSpec};

/// Whether a plan trains (batch statistics, dropout, backward, update) or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A dropout layer: its index in the model (which picks its mask stream) and probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutLayer {
    pub layer: usize,
    pub p: f32,
}

/// The layers that run inside one pool's kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolFused {
    /// The batch norm whose normalisation the pool's forward applies to its input.
    pub batch_norm: Option<usize>,
    /// With tiling windows: the batch norm's backward runs in the pool's backward.
    pub batch_norm_backward: bool,
    pub relu: bool,
    /// Dropout before the pool (None when evaluating: dropout is then the identity).
    pub pre_dropout: Option<DropoutLayer>,
    /// Dropout after the pool (None when evaluating).
    pub post_dropout: Option<DropoutLayer>,
    /// Training, with tiling windows and no batch norm: the convolution whose output the
    /// pool reads (through the fused ReLU/dropout). Its bias gradient is the sum of the
    /// gradient the pool's backward writes, so the pool's backward computes it.
    pub conv_bias: Option<usize>,
    /// A 1-channel 3x3 convolution right before a 2x2 pool with nothing else fused but a
    /// ReLU: the convolution's step runs the whole block (`kernels::conv2d_pool`) and the
    /// pool's forward is skipped; its backward runs as usual.
    pub conv_forward: Option<usize>,
}

/// What one step runs. Each variant names the layer whose kernels it uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// With `relu`, the ReLU right after it runs as its output is stored (`relu_fused`).
    Conv {
        layer: usize,
        relu: bool,
    },
    /// With `relu`, the ReLU right after it runs in its product's epilogue (`relu_fused`).
    Linear {
        layer: usize,
        relu: bool,
    },
    /// A batch norm on its own (batch statistics when training, running ones when not).
    BatchNorm {
        layer: usize,
    },
    Relu {
        layer: usize,
    },
    Dropout(DropoutLayer),
    MaxPool {
        layer: usize,
        fused: PoolFused,
    },
}

/// One step: its op and the model layers it covers, `first..=last`. Its input has the
/// shape `spec.input(first)`, its output `spec.output(last)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub op: Op,
    pub first: usize,
    pub last: usize,
}

impl Step {
    /// Does the step's backward write a gradient to its input even when that input is the
    /// network's input? (A batch norm's backward computes it alongside dgamma/dbeta.)
    pub fn writes_input_gradient(&self) -> bool {
        match self.op {
            Op::BatchNorm { .. } => true,
            Op::MaxPool { fused, .. } => fused.batch_norm.is_some(),
            _ => false,
        }
    }
}

/// For each layer, the pool that absorbs it, if any (the rules in the module comment).
fn absorbed_by_pool(layers: &[Layer]) -> Vec<Option<usize>> {
    let mut by = vec![None; layers.len()];
    for (i, layer) in layers.iter().enumerate() {
        if !matches!(layer, Layer::MaxPool { .. }) {
            continue;
        }
        let (mut relu, mut dropout) = (false, false);
        for j in (0..i).rev() {
            match layers[j] {
                Layer::Relu if !relu && by[j].is_none() => relu = true,
                Layer::Dropout { .. } if !dropout && by[j].is_none() => dropout = true,
                Layer::BatchNorm if by[j].is_none() => {
                    by[j] = Some(i);
                    break;
                }
                _ => break,
            }
            by[j] = Some(i);
        }
        if let Some(Layer::Dropout { .. }) = layers.get(i + 1) {
            by[i + 1] = Some(i);
        }
    }
    by
}

/// The steps that run `spec` in `mode`, in forward order.
pub fn steps(spec: &ModelSpec, mode: Mode) -> Vec<Step> {
    let layers = &spec.layers;
    let by = absorbed_by_pool(layers);
    let train = mode == Mode::Train;
    let mut out = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        if by[i].is_some() {
            continue; // runs inside its pool's step
        }
        let op = match *layer {
            Layer::Conv { .. } => Op::Conv {
                layer: i,
                relu: false,
            },
            Layer::Linear { .. } => Op::Linear {
                layer: i,
                relu: false,
            },
            Layer::BatchNorm => Op::BatchNorm { layer: i },
            Layer::Relu => Op::Relu { layer: i },
            Layer::Dropout { p } if train => Op::Dropout(DropoutLayer { layer: i, p }),
            Layer::Dropout { .. } | Layer::Flatten => continue,
            Layer::MaxPool { k, stride } => {
                let mut fused = PoolFused::default();
                let absorbed = (0..layers.len()).filter(|&j| by[j] == Some(i));
                for j in absorbed.clone() {
                    match layers[j] {
                        Layer::BatchNorm => {
                            fused.batch_norm = Some(j);
                            fused.batch_norm_backward = train && k == stride;
                        }
                        Layer::Relu => fused.relu = true,
                        Layer::Dropout { p } if train => {
                            let d = Some(DropoutLayer { layer: j, p });
                            if j < i {
                                fused.pre_dropout = d;
                            } else {
                                fused.post_dropout = d;
                            }
                        }
                        // Evaluating, dropout is the identity.
                        Layer::Dropout { .. } => {}
                        Layer::Conv { .. }
                        | Layer::Linear { .. }
                        | Layer::MaxPool { .. }
                        | Layer::Flatten => {
                            unreachable!("absorbed_by_pool takes only batch norm, ReLU, dropout")
                        }
                    }
                }
                let first = absorbed.clone().next().map_or(i, |j| j.min(i));
                let last = absorbed.max().map_or(i, |j| j.max(i));
                if let Some(Step {
                    op: Op::Conv { layer, .. },
                    ..
                }) = out.last()
                {
                    if train && k == stride && fused.batch_norm.is_none() {
                        fused.conv_bias = Some(*layer);
                    }
                    let only_relu = fused.batch_norm.is_none()
                        && fused.pre_dropout.is_none()
                        && fused.post_dropout.is_none();
                    let (c, p) = (shapes::conv(spec, *layer, 1), shapes::pool(spec, i, 1));
                    if only_relu && conv2d_pool::applies(c, p) {
                        fused.conv_forward = Some(*layer);
                    }
                }
                out.push(Step {
                    op: Op::MaxPool { layer: i, fused },
                    first,
                    last,
                });
                continue;
            }
        };
        out.push(Step {
            op,
            first: i,
            last: i,
        });
    }
    relu_fused(out, train)
}

/// A ReLU step right after a linear or convolution step runs in that step's kernel (max(y, 0)
/// as y is stored); its tensor is never written. Training, its backward (zero the gradient
/// where its output is 0) runs where the gradient to its output is written, by the step
/// that reads that output (`masks_input_gradient`): a linear step (in its input-gradient
/// product's epilogue), a batch norm, or a pool with a fused batch norm (as each stores its
/// input gradient). One dropout may come between: its output is 0 wherever the ReLU's is,
/// and its backward zeroes the rest of what it drops, so masking by it gives the same
/// gradient. Where no such step follows, the ReLU keeps its step.
fn relu_fused(steps: Vec<Step>, train: bool) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for (k, s) in steps.iter().enumerate() {
        if let (Op::Relu { .. }, Some(prev)) = (s.op, out.last_mut()) {
            let fused = match prev.op {
                Op::Linear { layer, relu: false } => Some(Op::Linear { layer, relu: true }),
                Op::Conv { layer, relu: false } => Some(Op::Conv { layer, relu: true }),
                _ => None,
            };
            if let Some(op) = fused.filter(|_| !train || masks_its_input_gradient(&steps, k + 1)) {
                prev.op = op;
                prev.last = s.last;
                continue;
            }
        }
        out.push(*s);
    }
    out
}

/// Can the step that reads step k's output (step k + 1, or the one after a dropout at
/// k + 1) mask its input gradient by its input?
fn masks_its_input_gradient(steps: &[Step], k: usize) -> bool {
    let k = match steps.get(k).map(|s| s.op) {
        Some(Op::Dropout(_)) => k + 1,
        _ => k,
    };
    steps.get(k).is_some_and(can_mask)
}

/// Can this step's backward zero its input gradient where its input is 0, as it stores it?
fn can_mask(step: &Step) -> bool {
    match step.op {
        Op::Linear { .. } | Op::BatchNorm { .. } => true,
        Op::MaxPool { fused, .. } => fused.batch_norm.is_some(),
        _ => false,
    }
}

/// Does step k's backward zero its input gradient where its input is 0 (the input being the
/// output of a ReLU fused into the step before, or into the one before a dropout step)?
pub fn masks_input_gradient(steps: &[Step], k: usize) -> bool {
    let relu_before = |j: usize| {
        matches!(
            steps[j].op,
            Op::Linear { relu: true, .. } | Op::Conv { relu: true, .. }
        )
    };
    let fed_by_relu = match k {
        0 => false,
        1 => relu_before(0),
        _ => {
            relu_before(k - 1) || (matches!(steps[k - 1].op, Op::Dropout(_)) && relu_before(k - 2))
        }
    };
    fed_by_relu && can_mask(&steps[k])
}

/// Does step k (a convolution) run the next step's pool forward too?
pub fn pool_forward_in_step(steps: &[Step], k: usize) -> bool {
    match (steps[k].op, steps.get(k + 1).map(|s| s.op)) {
        (Op::Conv { layer, .. }, Some(Op::MaxPool { fused, .. })) => {
            fused.conv_forward == Some(layer)
        }
        _ => false,
    }
}

/// Is the bias gradient of step k (a convolution) computed by the next step's pool?
pub fn bias_gradient_in_next_step(steps: &[Step], k: usize) -> bool {
    match (steps[k].op, steps.get(k + 1).map(|s| s.op)) {
        (Op::Conv { layer, .. }, Some(Op::MaxPool { fused, .. })) => fused.conv_bias == Some(layer),
        _ => false,
    }
}

/// For each layer, the index of the step that runs it (None: a flatten, or a dropout when
/// evaluating, which need no kernel).
pub fn step_of_layer(spec: &ModelSpec, steps: &[Step]) -> Vec<Option<usize>> {
    let mut of = vec![None; spec.layers.len()];
    for (k, s) in steps.iter().enumerate() {
        for (i, slot) in of.iter_mut().enumerate().take(s.last + 1).skip(s.first) {
            let runs_here = match s.op {
                Op::MaxPool { .. } => !matches!(spec.layers[i], Layer::Flatten),
                _ => true,
            };
            if runs_here {
                *slot = Some(k);
            }
        }
    }
    of
}

#[cfg(test)]
mod tests;
