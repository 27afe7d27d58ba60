//! The recorded plans: the dispatches of a forward, backward and update over the step list
//! (`fuse::steps`), and the whole training and evaluation steps built from them. Plans are
//! built once per batch size; a training step is just their recording.

use super::fuse::{self, Mode, Op, PoolFused};
use super::{shapes, Buffers, Network, OptimizerConfig};
use crate::gpu::{Dispatch, Gpu, Result, Tensor};
use crate::kernels::{
    augment::{self, Augment},
    batchnorm::{self, BatchNormTensors},
    conv2d, conv2d_pool,
    data::{self, GatherConfig},
    dropout::{self, DropoutConfig},
    elementwise, matmul,
    optim::{self, AdamConfig, SgdConfig},
    pool::{self, PoolFusion},
    softmax_xent::{self, XentShape},
};
use crate::model::{OptimizerKind, NUM_CLASSES};

/// Where a plan's examples come from: a u8 data set on the GPU and an index list into it.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub images: &'a Tensor,
    pub labels: &'a Tensor,
    pub indices: &'a Tensor,
    /// The counter whose `[0] - [1]` selects the step's slice of `indices`.
    pub counter: &'a Tensor,
}

/// Everything a plan needs besides the network and its buffers.
pub struct PlanInputs<'a> {
    pub source: Source<'a>,
    pub gather: GatherConfig,
    pub metrics: &'a Tensor,
    pub dropout_seed: u32,
    /// Label smoothing of the training loss (0 for evaluation).
    pub label_smoothing: f32,
    /// `--augment` and its workspace (the images as an atlas, the passes' scratch), whose
    /// images `source.indices` number; None: the plain gather (with the legacy
    /// --flip/--shift).
    pub augment: Option<(Augment, &'a augment::Workspace)>,
}

/// The tensors of batch-norm layer `j`, with the statistics saved by step `k`.
fn bn_tensors<'a>(net: &'a Network, bufs: &'a Buffers, j: usize, k: usize) -> BatchNormTensors<'a> {
    let st = &net.layers[j];
    BatchNormTensors {
        gamma: &st.weight.as_ref().expect("bn gamma").value,
        beta: &st.bias.as_ref().expect("bn beta").value,
        running_mean: st.running_mean.as_ref().expect("running mean"),
        running_var: st.running_var.as_ref().expect("running var"),
        save_stats: bufs.bn_saved[k].as_ref().expect("bn saved stats"),
    }
}

/// The pool kernel's view of its fused layers.
fn pool_fusion(f: &PoolFused, seed: u32) -> PoolFusion {
    let d = |d: Option<super::fuse::DropoutLayer>| {
        d.map(|d| pool::Dropout {
            layer: d.layer as u32,
            p: d.p,
        })
    };
    PoolFusion {
        relu: f.relu,
        pre_dropout: d(f.pre_dropout),
        post_dropout: d(f.post_dropout),
        seed,
    }
}

fn dropout_config(net: &Network, layer: usize, p: f32, batch: usize, seed: u32) -> DropoutConfig {
    DropoutConfig {
        n: shapes::elements(&net.spec, layer, batch),
        p,
        seed,
        layer: layer as u32,
    }
}

/// The forward pass over `batch` examples (which may be fewer than `bufs.batch`).
pub fn forward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
) -> Result<Vec<Dispatch>> {
    let spec = &net.spec;
    let train = bufs.mode == Mode::Train;
    let mut out = Vec::new();
    for (k, step) in bufs.steps.iter().enumerate() {
        let (x, y) = (&bufs.acts[k], &bufs.acts[k + 1]);
        match step.op {
            Op::Conv { layer } => {
                let p = net.param_pair(layer);
                let s = shapes::conv(spec, layer, batch);
                if let (Some(table), Some(Op::MaxPool { layer: pool, fused })) =
                    (&bufs.conv_table[k], bufs.steps.get(k + 1).map(|s| s.op))
                {
                    // The whole block; the pool's step then only has a backward.
                    out.extend(conv2d_pool::conv2d_relu_maxpool(
                        gpu,
                        s,
                        shapes::pool(spec, pool, batch),
                        fused.relu,
                        x,
                        &p.0.value,
                        &p.1.value,
                        table,
                        &bufs.acts[k + 2],
                        bufs.argmax[k + 1].as_ref().expect("argmax"),
                    )?);
                    continue;
                }
                out.extend(conv2d::conv2d_forward(
                    gpu, s, x, &p.0.value, &p.1.value, y,
                )?);
            }
            Op::Linear { layer, relu } => {
                let p = net.param_pair(layer);
                let s = shapes::linear(spec, layer, batch);
                out.push(match relu {
                    false => matmul::linear_forward(gpu, s, x, &p.0.value, &p.1.value, y)?,
                    true => matmul::linear_relu_forward(gpu, s, x, &p.0.value, &p.1.value, y)?,
                });
            }
            Op::BatchNorm { layer } => {
                let s = shapes::batch_norm(spec, layer, batch);
                let t = bn_tensors(net, bufs, layer, k);
                if train {
                    out.extend(batchnorm::batchnorm_forward_train(gpu, s, &t, x, y)?);
                } else {
                    out.push(batchnorm::batchnorm_forward_eval(gpu, s, &t, x, y)?);
                }
            }
            Op::Relu { layer } => {
                let n = shapes::elements(spec, layer, batch);
                out.push(elementwise::relu_forward(gpu, x, y, n)?);
            }
            Op::Dropout(d) => {
                let cfg = dropout_config(net, d.layer, d.p, batch, dropout_seed);
                out.push(dropout::dropout_forward(gpu, cfg, &net.counter, x, y)?);
            }
            Op::MaxPool { fused, .. } if fused.conv_forward.is_some() => {} // in the conv's step
            Op::MaxPool { layer, fused } => {
                let bn_t = fused.batch_norm.map(|j| bn_tensors(net, bufs, j, k));
                if let (Some(j), Some(t), true) = (fused.batch_norm, &bn_t, train) {
                    // The batch statistics the pool's normalisation reads.
                    let s = shapes::batch_norm(spec, j, batch);
                    out.push(batchnorm::batchnorm_stats(gpu, s, t, x)?);
                }
                let fused_bn =
                    fused
                        .batch_norm
                        .zip(bn_t.as_ref())
                        .map(|(j, t)| pool::FusedBatchNorm {
                            tensors: t,
                            training: train,
                            eps: shapes::batch_norm(spec, j, batch).eps,
                        });
                out.push(pool::maxpool_forward(
                    gpu,
                    shapes::pool(spec, layer, batch),
                    pool_fusion(&fused, dropout_seed),
                    fused_bn,
                    &net.counter,
                    x,
                    y,
                    bufs.argmax[k].as_ref().expect("argmax"),
                )?);
            }
        }
    }
    Ok(out)
}

/// The backward pass: from the logits' gradient to every parameter gradient. Parameter
/// gradients are overwritten (never accumulated), as are activation gradients.
pub fn backward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
) -> Result<Vec<Dispatch>> {
    let spec = &net.spec;
    let mut out = Vec::new();
    for (k, step) in bufs.steps.iter().enumerate().rev() {
        let x = &bufs.acts[k];
        let dy = bufs.grads[k + 1].as_ref().expect("output gradient");
        // None only for the network's input, which needs no gradient.
        let dx = bufs.grads[k].as_ref();
        match step.op {
            Op::Conv { layer } => {
                let s = shapes::conv(spec, layer, batch);
                let (w, b) = net.param_pair(layer);
                out.extend(conv2d::conv2d_backward_weight(gpu, s, dy, x, &w.grad)?);
                // Else the pool after it has written the bias gradient already.
                if !fuse::bias_gradient_in_next_step(&bufs.steps, k) {
                    out.push(conv2d::conv2d_backward_bias(gpu, s, dy, &b.grad)?);
                }
                if let Some(dx) = dx {
                    out.extend(conv2d::conv2d_backward_input(gpu, s, dy, &w.value, dx)?);
                }
            }
            // With `relu`, dy is already the gradient to the ReLU's input: the next step's
            // backward zeroed it where the ReLU's output is 0.
            Op::Linear { layer, .. } => {
                let s = shapes::linear(spec, layer, batch);
                let (w, b) = net.param_pair(layer);
                out.push(matmul::linear_backward_weight(gpu, s, dy, x, &w.grad)?);
                out.push(matmul::linear_backward_bias(gpu, s, dy, &b.grad)?);
                match dx {
                    Some(dx) if fuse::masks_input_gradient(&bufs.steps, k) => {
                        out.push(matmul::linear_backward_input_relu(
                            gpu, s, dy, &w.value, x, dx,
                        )?);
                    }
                    Some(dx) => out.push(matmul::linear_backward_input(gpu, s, dy, &w.value, dx)?),
                    None => {}
                }
            }
            Op::BatchNorm { layer } => {
                out.extend(batch_norm_backward(gpu, net, bufs, layer, k, batch, dy)?);
            }
            Op::Relu { layer } => {
                if let Some(dx) = dx {
                    let n = shapes::elements(spec, layer, batch);
                    out.push(elementwise::relu_backward(gpu, x, dy, dx, n)?);
                }
            }
            Op::Dropout(d) => {
                if let Some(dx) = dx {
                    let cfg = dropout_config(net, d.layer, d.p, batch, dropout_seed);
                    out.push(dropout::dropout_backward(gpu, cfg, &net.counter, dy, dx)?);
                }
            }
            Op::MaxPool { layer, fused } => {
                let s = shapes::pool(spec, layer, batch);
                let fusion = pool_fusion(&fused, dropout_seed);
                let argmax = bufs.argmax[k].as_ref().expect("argmax");
                match fused.batch_norm {
                    // Tiling windows: straight through to the batch norm's input gradient.
                    Some(j) if fused.batch_norm_backward => {
                        let (gamma, beta) = net.param_pair(j);
                        out.extend(pool::maxpool_backward_batchnorm(
                            gpu,
                            s,
                            fusion,
                            &bn_tensors(net, bufs, j, k),
                            x,
                            dy,
                            argmax,
                            dx.expect("a batch norm's input gradient"),
                            &gamma.grad,
                            &beta.grad,
                        )?);
                    }
                    // Overlapping windows: the pool's gradient to the batch norm's output,
                    // then the batch norm's own backward.
                    Some(j) => {
                        let bn_dy = bufs.bn_grad[k].as_ref().expect("batch-norm output grad");
                        out.push(pool::maxpool_backward(gpu, s, fusion, dy, argmax, bn_dy)?);
                        out.extend(batch_norm_backward(gpu, net, bufs, j, k, batch, bn_dy)?);
                    }
                    None => match (fused.conv_bias, dx) {
                        (Some(conv), Some(dx)) => {
                            let db = &net.param_pair(conv).1.grad;
                            let sums = bufs.row_sums[k].as_ref().expect("row sums");
                            out.extend(pool::maxpool_backward_conv_bias(
                                gpu, s, fusion, dy, argmax, dx, sums, db,
                            )?);
                        }
                        (None, Some(dx)) => {
                            out.push(pool::maxpool_backward(gpu, s, fusion, dy, argmax, dx)?);
                        }
                        (_, None) => {}
                    },
                }
            }
        }
    }
    Ok(out)
}

/// Batch-norm layer `j` (run by step `k`) backward from `dy` to step k's input gradient
/// and its dgamma / dbeta.
fn batch_norm_backward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    j: usize,
    k: usize,
    batch: usize,
    dy: &Tensor,
) -> Result<Vec<Dispatch>> {
    let (gamma, beta) = net.param_pair(j);
    // The step list gives a batch norm's step an input gradient even on the network's
    // input: its dgamma/dbeta come from the same pair of dispatches.
    let dx = bufs.grads[k]
        .as_ref()
        .expect("a batch norm's input gradient");
    batchnorm::batchnorm_backward(
        gpu,
        shapes::batch_norm(&net.spec, j, batch),
        &bn_tensors(net, bufs, j, k),
        &bufs.acts[k],
        dy,
        dx,
        &gamma.grad,
        &beta.grad,
    )
    .map(Vec::from)
}

/// One optimizer update of every parameter, then the step counter's advance.
pub fn update(
    gpu: &Gpu,
    net: &Network,
    opt: &OptimizerConfig,
    lr: &Tensor,
) -> Result<Vec<Dispatch>> {
    let mut out = Vec::new();
    // One dispatch per arena (one for every model whose parameters fit one binding): the
    // gaps between tensors hold zero weights and zero gradients, which every update keeps
    // at zero.
    for p in &net.arenas {
        out.push(match opt.kind {
            OptimizerKind::Sgd => {
                let cfg = SgdConfig {
                    momentum: opt.momentum,
                    nesterov: opt.nesterov,
                    weight_decay: opt.weight_decay,
                    l1: opt.l1,
                };
                optim::sgd_step(gpu, cfg, &p.value, &p.grad, &p.m1, &net.counter, lr)?
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let cfg = AdamConfig {
                    beta1: opt.beta1,
                    beta2: opt.beta2,
                    eps: opt.eps,
                    weight_decay: opt.weight_decay,
                    l1: opt.l1,
                    decoupled: opt.kind == OptimizerKind::Adamw,
                };
                optim::adam_step(gpu, cfg, &p.value, &p.grad, &p.m1, &p.m2, &net.counter, lr)?
            }
        });
    }
    out.push(optim::step_advance(gpu, &net.counter)?);
    Ok(out)
}

/// Forward, mean cross-entropy (loss and accuracy added to `metrics`) and backward on the
/// batch already in `bufs`: every parameter gradient, no update. The one composition of a
/// gradient computation that training, `bench`'s validation and the fixture test share.
pub fn gradient_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
    metrics: &Tensor,
    label_smoothing: f32,
) -> Result<Vec<Dispatch>> {
    let mut plan = forward(gpu, net, bufs, batch, dropout_seed)?;
    let xs = XentShape {
        batch,
        classes: NUM_CLASSES,
        smoothing: label_smoothing,
    };
    let (logits, labels) = (bufs.logits(), &bufs.labels);
    plan.push(softmax_xent::softmax_xent_train(
        gpu,
        xs,
        logits,
        labels,
        metrics,
        bufs.logits_grad(),
    )?);
    plan.extend(backward(gpu, net, bufs, batch, dropout_seed)?);
    Ok(plan)
}

/// A full training step over `batch` examples: gather, forward, loss, backward, update.
pub fn train_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    opt: &OptimizerConfig,
    lr: &Tensor,
    batch: usize,
) -> Result<Vec<Dispatch>> {
    let mut plan = gather(gpu, bufs, inputs, batch)?;
    plan.extend(gradient_step(
        gpu,
        net,
        bufs,
        batch,
        inputs.dropout_seed,
        inputs.metrics,
        inputs.label_smoothing,
    )?);
    plan.extend(update(gpu, net, opt, lr)?);
    Ok(plan)
}

/// An evaluation step: gather, eval-mode forward, loss and accuracy into the metrics (and
/// the confusion counts, when given), then advance the source's counter.
pub fn eval_step(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    inputs: &PlanInputs,
    batch: usize,
    confusion: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let mut plan = gather(gpu, bufs, inputs, batch)?;
    plan.extend(forward(gpu, net, bufs, batch, inputs.dropout_seed)?);
    // Evaluation reports the plain cross-entropy, whatever the training loss smooths.
    let xs = XentShape {
        batch,
        classes: NUM_CLASSES,
        smoothing: 0.0,
    };
    let (logits, labels) = (bufs.logits(), &bufs.labels);
    plan.push(softmax_xent::softmax_xent_forward(
        gpu,
        xs,
        logits,
        labels,
        inputs.metrics,
    )?);
    if let Some(c) = confusion {
        plan.push(softmax_xent::confusion_accumulate(
            gpu, xs, logits, labels, c,
        )?);
    }
    plan.push(optim::step_advance(gpu, inputs.source.counter)?);
    Ok(plan)
}

/// Batch assembly: the plain gather, or the augmented one (2–3 dispatches) when training
/// with `--augment`.
fn gather(gpu: &Gpu, bufs: &Buffers, inputs: &PlanInputs, batch: usize) -> Result<Vec<Dispatch>> {
    let cfg = GatherConfig {
        batch,
        ..inputs.gather
    };
    let s = &inputs.source;
    match &inputs.augment {
        Some((a, ws)) => augment::gather_augmented(
            gpu,
            a,
            cfg,
            ws,
            s.labels,
            s.indices,
            s.counter,
            bufs.input(),
            &bufs.labels,
        ),
        None => Ok(vec![data::gather_batch(
            gpu,
            cfg,
            s.images,
            s.labels,
            s.indices,
            s.counter,
            bufs.input(),
            &bufs.labels,
        )?]),
    }
}
