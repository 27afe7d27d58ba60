//! Fusion: the model's layer list compiled into the list of steps the GPU runs. Every rule
//! about which layers run inside another layer's kernels lives here; the buffers, the
//! recorded plans, `summary` and `bench` all read the step list.
//!
//! The one fusion today is around max pooling (see `kernels::pool::PoolFusion`): up to one
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
    Conv {
        layer: usize,
    },
    Linear {
        layer: usize,
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
            Layer::Conv { .. } => Op::Conv { layer: i },
            Layer::Linear { .. } => Op::Linear { layer: i },
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
                    op: Op::Conv { layer },
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
    out
}

/// Does step k (a convolution) run the next step's pool forward too?
pub fn pool_forward_in_step(steps: &[Step], k: usize) -> bool {
    match (steps[k].op, steps.get(k + 1).map(|s| s.op)) {
        (Op::Conv { layer }, Some(Op::MaxPool { fused, .. })) => fused.conv_forward == Some(layer),
        _ => false,
    }
}

/// Is the bias gradient of step k (a convolution) computed by the next step's pool?
pub fn bias_gradient_in_next_step(steps: &[Step], k: usize) -> bool {
    match (steps[k].op, steps.get(k + 1).map(|s| s.op)) {
        (Op::Conv { layer }, Some(Op::MaxPool { fused, .. })) => fused.conv_bias == Some(layer),
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
mod tests {
    use super::*;

    fn spec(text: &str) -> ModelSpec {
        ModelSpec::parse(text).unwrap()
    }

    fn dropout(layer: usize, p: f32) -> Option<DropoutLayer> {
        Some(DropoutLayer { layer, p })
    }

    #[test]
    fn regcnn_block_is_one_pool_step() {
        // conv bn dropout relu maxpool: the batch norm, dropout and ReLU run in the pool.
        let s = spec("conv(32,3) bn dropout(0.2) relu maxpool(2) flatten linear(10)");
        let train = steps(&s, Mode::Train);
        assert_eq!(train.len(), 3);
        assert_eq!(train[0].op, Op::Conv { layer: 0 });
        let fused = PoolFused {
            batch_norm: Some(1),
            batch_norm_backward: true,
            relu: true,
            pre_dropout: dropout(2, 0.2),
            post_dropout: None,
            conv_bias: None,
            conv_forward: None,
        };
        assert_eq!(
            train[1],
            Step {
                op: Op::MaxPool { layer: 4, fused },
                first: 1,
                last: 4
            }
        );
        // The flatten is no step; the linear layer reads the pool's output.
        assert_eq!(train[2].op, Op::Linear { layer: 6 });
        // Evaluating: the same steps, without dropout and without a backward.
        let eval = steps(&s, Mode::Eval);
        let Op::MaxPool { fused, .. } = eval[1].op else {
            panic!("{eval:?}")
        };
        assert_eq!(fused.pre_dropout, None);
        assert!(!fused.batch_norm_backward && fused.relu && fused.batch_norm == Some(1));
        assert_eq!(
            step_of_layer(&s, &train),
            vec![Some(0), Some(1), Some(1), Some(1), Some(1), None, Some(2)]
        );
    }

    #[test]
    fn overlapping_windows_keep_the_batch_norm_backward_separate() {
        let s =
            spec("conv(6,3) bn dropout(0.3) relu maxpool(3,2) dropout(0.25) flatten linear(10)");
        let t = steps(&s, Mode::Train);
        let Op::MaxPool { layer: 4, fused } = t[1].op else {
            panic!("{t:?}")
        };
        assert_eq!((t[1].first, t[1].last), (1, 5));
        assert_eq!(fused.batch_norm, Some(1));
        assert!(!fused.batch_norm_backward);
        assert_eq!(fused.pre_dropout, dropout(2, 0.3));
        assert_eq!(fused.post_dropout, dropout(5, 0.25));
        assert!(t[1].writes_input_gradient());
        assert!(!t[0].writes_input_gradient());
    }

    #[test]
    fn only_one_relu_and_one_dropout_fuse_and_nothing_past_a_conv() {
        // relu relu maxpool: only the nearer ReLU fuses, the other stays its own step.
        let s = spec("conv(4,3) relu relu maxpool(2) flatten linear(10)");
        let t = steps(&s, Mode::Train);
        assert_eq!(t.len(), 4);
        assert_eq!(t[1].op, Op::Relu { layer: 1 });
        assert_eq!((t[2].first, t[2].last), (2, 3));
        // A pool straight after a conv fuses no layer, only the conv's bias gradient and
        // (a 1-channel input) its forward.
        let s = spec("conv(4,3) maxpool(2) flatten linear(10)");
        let t = steps(&s, Mode::Train);
        assert_eq!(
            t[1].op,
            Op::MaxPool {
                layer: 1,
                fused: PoolFused {
                    conv_bias: Some(0),
                    conv_forward: Some(0),
                    ..PoolFused::default()
                }
            }
        );
    }

    #[test]
    fn a_one_channel_conv_runs_the_pool_forward_after_it() {
        let forward_of = |st: &Step| match st.op {
            Op::MaxPool { fused, .. } => fused.conv_forward,
            _ => None,
        };
        // cnn1: the first block (1 input channel) only, when training and evaluating.
        let cnn1 = spec(crate::model::preset("cnn1").unwrap().spec);
        for mode in [Mode::Train, Mode::Eval] {
            let t = steps(&cnn1, mode);
            let fused: Vec<_> = t.iter().map(forward_of).collect();
            assert_eq!(
                fused,
                [None, Some(0), None, None, None, None, None],
                "{mode:?}"
            );
            assert!(pool_forward_in_step(&t, 0) && !pool_forward_in_step(&t, 2));
        }
        // Not with a batch norm or dropout in the block, 3x3 pools, 5x5 kernels, stride 2,
        // or more than 64 channels.
        for text in [
            "conv(4,3) bn relu maxpool(2) flatten linear(10)",
            "conv(4,3) relu dropout(0.5) maxpool(2) flatten linear(10)",
            "conv(4,3) relu maxpool(2) dropout(0.5) flatten linear(10)",
            "conv(4,3) relu maxpool(3) flatten linear(10)",
            "conv(4,5) relu maxpool(2) flatten linear(10)",
            "conv(4,3,2) relu maxpool(2) flatten linear(10)",
            "conv(65,3) relu maxpool(2) flatten linear(10)",
        ] {
            let t = steps(&spec(text), Mode::Train);
            assert!(t.iter().all(|st| forward_of(st).is_none()), "{text}");
            assert!(!pool_forward_in_step(&t, 0), "{text}");
        }
        // Padding is fine.
        let t = steps(
            &spec("conv(8,3,1,1) relu maxpool(2) flatten linear(10)"),
            Mode::Eval,
        );
        assert!(pool_forward_in_step(&t, 0));
    }

    #[test]
    fn a_tiling_pool_after_a_conv_computes_its_bias_gradient() {
        // cnn1's blocks: conv relu maxpool(2), the ReLU in the pool.
        let s = spec(
            "conv(4,3) relu maxpool(2) conv(8,3) dropout(0.5) relu maxpool(2) flatten linear(10)",
        );
        let t = steps(&s, Mode::Train);
        let bias_of = |st: &Step| match st.op {
            Op::MaxPool { fused, .. } => fused.conv_bias,
            _ => None,
        };
        assert_eq!(
            t.iter().map(bias_of).collect::<Vec<_>>(),
            [None, Some(0), None, Some(3), None]
        );
        assert!(bias_gradient_in_next_step(&t, 0) && bias_gradient_in_next_step(&t, 2));
        assert!(!bias_gradient_in_next_step(&t, 1) && !bias_gradient_in_next_step(&t, 4));
        // Not when evaluating, not with overlapping windows, not with a batch norm between
        // (the conv's gradient is then the batch norm's input gradient), not after a linear.
        for (text, mode) in [
            ("conv(4,3) relu maxpool(2) flatten linear(10)", Mode::Eval),
            (
                "conv(4,3) relu maxpool(3,2) flatten linear(10)",
                Mode::Train,
            ),
            (
                "conv(4,3) bn relu maxpool(2) flatten linear(10)",
                Mode::Train,
            ),
            (
                "conv(4,3) relu relu maxpool(2) flatten linear(10)",
                Mode::Train,
            ),
        ] {
            let t = steps(&spec(text), mode);
            assert!(t.iter().all(|st| bias_of(st).is_none()), "{text}");
            assert!(!bias_gradient_in_next_step(&t, 0), "{text}");
        }
    }

    #[test]
    fn a_dropout_after_one_pool_is_not_taken_by_the_next() {
        let s = spec("maxpool(2) dropout(0.5) maxpool(2) flatten linear(10)");
        let t = steps(&s, Mode::Train);
        assert_eq!(t.len(), 3);
        let Op::MaxPool { fused: f0, .. } = t[0].op else {
            panic!()
        };
        let Op::MaxPool { fused: f1, .. } = t[1].op else {
            panic!()
        };
        assert_eq!(f0.post_dropout, dropout(1, 0.5));
        assert_eq!(f1, PoolFused::default());
    }

    #[test]
    fn unfused_layers_are_one_step_each_and_eval_drops_dropout() {
        let s = spec("flatten linear(24) bn relu dropout(0.5) linear(10)");
        let kinds = |m| {
            steps(&s, m)
                .iter()
                .map(|st| {
                    format!("{:?}", st.op)
                        .split(' ')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(Mode::Train),
            [
                "Linear",
                "BatchNorm",
                "Relu",
                "Dropout(DropoutLayer",
                "Linear"
            ]
        );
        assert_eq!(kinds(Mode::Eval), ["Linear", "BatchNorm", "Relu", "Linear"]);
        // A batch norm on the network's input writes the input's gradient.
        let s = spec("bn flatten linear(10)");
        assert!(steps(&s, Mode::Train)[0].writes_input_gradient());
    }

    #[test]
    fn every_preset_compiles_to_the_expected_number_of_steps() {
        // mlp: linear relu linear relu linear; cnn1: conv pool conv pool linear relu linear
        // (ReLUs in the pools); cnn2: 3x (conv, pool with bn/relu/dropout) + linear relu
        // dropout linear; regcnn: 2x (conv, pool) + linear relu linear; vgg: below.
        for (name, train, eval) in [
            ("mlp", 5, 5),
            ("cnn1", 7, 7),
            ("cnn2", 10, 9),
            ("regcnn", 7, 7),
        ] {
            let s = spec(crate::model::preset(name).unwrap().spec);
            assert_eq!(steps(&s, Mode::Train).len(), train, "{name} train");
            assert_eq!(steps(&s, Mode::Eval).len(), eval, "{name} eval");
        }
    }
}
