//! The layer plans: the dispatches of a forward and a backward pass over the step list
//! (`fuse::steps`). `steps` composes them into whole training and evaluation steps; plans
//! are built once per batch size, and a training step is just their recording.

use super::fuse::{self, Mode, Op, PoolFused};
use super::{shapes, Buffers, Network};
use crate::gpu::{Dispatch, Gpu, Result, Tensor};
use crate::kernels::softmax_xent::Classifier;
use crate::kernels::{
    batchnorm::{self, BatchNormTensors},
    conv2d::{self, WeightPacker},
    conv2d_pool,
    dropout::{self, DropoutConfig},
    elementwise, matmul,
    pool::{self, PoolFusion},
};

const AUTO: conv2d::Variant = conv2d::Variant::Auto;

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

pub(super) fn forward_packed(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
    mut packer: Option<&mut WeightPacker>,
) -> Result<Vec<Dispatch>> {
    let spec = &net.spec;
    let train = bufs.mode == Mode::Train;
    let mut out = Vec::new();
    for (k, step) in bufs.steps.iter().enumerate() {
        let (x, y) = (&bufs.acts[k], &bufs.acts[k + 1]);
        match step.op {
            Op::Conv { layer, relu } => {
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
                let (w, b) = (&p.0.value, &p.1.value);
                out.extend(match (packer.as_deref_mut(), relu) {
                    (Some(packer), _) => {
                        conv2d::conv2d_forward_packed(gpu, AUTO, s, x, w, b, y, relu, packer)?
                    }
                    (None, false) => conv2d::conv2d_forward(gpu, s, x, w, b, y)?,
                    (None, true) => conv2d::conv2d_relu_forward_with(gpu, AUTO, s, x, w, b, y)?,
                });
            }
            Op::Linear { layer, relu } => {
                let p = net.param_pair(layer);
                let s = shapes::linear(spec, layer, batch);
                out.extend(match relu {
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
                    out.extend(batchnorm::batchnorm_stats(gpu, s, t, x)?);
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

/// The last step when it is a linear layer whose input gradient the backward needs: what
/// the loss's dispatch computes beside the logits' gradient (`softmax_xent_train_input_grad`).
pub(super) fn classifier<'a>(
    net: &'a Network,
    bufs: &'a Buffers,
    batch: usize,
) -> Option<Classifier<'a>> {
    let last = bufs.steps.len() - 1;
    let Op::Linear { layer, .. } = bufs.steps[last].op else {
        return None;
    };
    Some(Classifier {
        inputs: shapes::linear(&net.spec, layer, batch).inputs,
        weight: &net.param_pair(layer).0.value,
        x: &bufs.acts[last],
        relu_input: fuse::masks_input_gradient(&bufs.steps, last),
        dx: bufs.grads[last].as_ref()?,
    })
}

/// The backward pass: from the logits' gradient to every parameter gradient. Parameter
/// gradients are overwritten (never accumulated), as are activation gradients. With
/// `classifier_dx_done`, the loss's dispatch has written the last step's input gradient
/// (`classifier`).
pub(super) fn backward(
    gpu: &Gpu,
    net: &Network,
    bufs: &Buffers,
    batch: usize,
    dropout_seed: u32,
    mut packer: Option<&mut WeightPacker>,
    classifier_dx_done: bool,
) -> Result<Vec<Dispatch>> {
    let spec = &net.spec;
    let mut out = Vec::new();
    let last = bufs.steps.len() - 1;
    for (k, step) in bufs.steps.iter().enumerate().rev() {
        let x = &bufs.acts[k];
        let dy = bufs.grads[k + 1].as_ref().expect("output gradient");
        // None for the network's input, which needs no gradient, and for what is done.
        let dx = bufs.grads[k]
            .as_ref()
            .filter(|_| !(classifier_dx_done && k == last));
        match step.op {
            // With `relu`, dy is already the gradient to the ReLU's input (see Linear).
            Op::Conv { layer, .. } => {
                let s = shapes::conv(spec, layer, batch);
                let (w, b) = net.param_pair(layer);
                // Else the pool after it has written the bias gradient already.
                out.extend(match fuse::bias_gradient_in_next_step(&bufs.steps, k) {
                    true => conv2d::conv2d_backward_weight(gpu, s, dy, x, &w.grad)?,
                    false => conv2d::conv2d_backward_weight_bias(gpu, s, dy, x, &w.grad, &b.grad)?,
                });
                if let Some(dx) = dx {
                    let w = &w.value;
                    out.extend(match packer.as_deref_mut() {
                        Some(p) => {
                            conv2d::conv2d_backward_input_packed(gpu, AUTO, s, dy, w, dx, p)?
                        }
                        None => conv2d::conv2d_backward_input(gpu, s, dy, w, dx)?,
                    });
                }
            }
            // With `relu`, dy is already the gradient to the ReLU's input: the next step's
            // backward zeroed it where the ReLU's output is 0.
            Op::Linear { layer, .. } => {
                let s = shapes::linear(spec, layer, batch);
                let (w, b) = net.param_pair(layer);
                out.extend(matmul::linear_backward_weight_bias(
                    gpu, s, dy, x, &w.grad, &b.grad,
                )?);
                match dx {
                    Some(dx) if fuse::masks_input_gradient(&bufs.steps, k) => {
                        out.extend(matmul::linear_backward_input_relu(
                            gpu, s, dy, &w.value, x, dx,
                        )?);
                    }
                    Some(dx) => {
                        out.extend(matmul::linear_backward_input(gpu, s, dy, &w.value, dx)?)
                    }
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
                            fuse::masks_input_gradient(&bufs.steps, k),
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
        fuse::masks_input_gradient(&bufs.steps, k),
    )
    .map(Vec::from)
}
