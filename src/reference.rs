//! A whole training step on the CPU, composed from the kernels' `*_reference` functions:
//! forward (training mode), mean cross-entropy, backward to every parameter; and the
//! evaluation-mode forward. `bench` validates the GPU's training step and inference against
//! them before timing anything, at the bench's own shapes.

use crate::kernels::{batchnorm, conv2d, dropout, elementwise, matmul, pool, softmax_xent};
use crate::model::{Layer, LayerParams, ModelSpec, NUM_CLASSES};
use crate::net::shapes;

pub struct StepReference {
    pub logits: Vec<f32>,
    pub loss: f64,
    /// (`{i}.weight` / `{i}.bias`, gradient) in layer order.
    pub grads: Vec<(String, Vec<f32>)>,
}

/// Logits of the evaluation-mode forward pass (batch statistics from the running
/// estimates, dropout off) on `input` [batch, 1, 28, 28].
pub fn eval_forward(spec: &ModelSpec, params: &[LayerParams], input: &[f32]) -> Vec<f32> {
    let (acts, _) = forward(spec, params, input, None);
    acts.last().expect("logits").clone()
}

/// Activations of every layer and the pools' argmax; `train` = Some((step, dropout seed))
/// for training mode (batch statistics, dropout masks as the GPU draws them), None to
/// evaluate.
fn forward(
    spec: &ModelSpec,
    params: &[LayerParams],
    input: &[f32],
    train: Option<(u32, u32)>,
) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    let batch = input.len() / spec.shapes[0].len();
    let mut acts = vec![input.to_vec()];
    let mut argmax: Vec<Vec<u32>> = vec![Vec::new(); spec.layers.len()];
    for (i, layer) in spec.layers.iter().enumerate() {
        let x = acts.last().expect("input");
        let (si, so) = (spec.input(i), spec.output(i));
        let mut y = vec![0f32; batch * so.len()];
        let p = &params[i];
        match *layer {
            Layer::Conv { .. } => {
                let s = shapes::conv(spec, i, batch);
                conv2d::conv2d_forward_reference(&mut y, x, &p.weight, &p.bias, s);
            }
            Layer::Linear { .. } => {
                let s = shapes::linear(spec, i, batch);
                matmul::linear_forward_reference(&mut y, x, &p.weight, &p.bias, s);
            }
            Layer::BatchNorm => {
                let s = shapes::batch_norm(spec, i, batch);
                let (mut m, mut v, mut rm, mut rv) = (
                    vec![0.0; si.c],
                    vec![0.0; si.c],
                    p.running_mean.clone(),
                    p.running_var.clone(),
                );
                if train.is_some() {
                    batchnorm::batchnorm_forward_train_reference(
                        &mut y, &mut m, &mut v, &mut rm, &mut rv, x, &p.weight, &p.bias, s,
                    );
                } else {
                    batchnorm::batchnorm_forward_eval_reference(
                        &mut y, x, &p.weight, &p.bias, &rm, &rv, s,
                    );
                }
            }
            Layer::Relu => elementwise::relu_forward_reference(&mut y, x),
            Layer::MaxPool { .. } => {
                let s = shapes::pool(spec, i, batch);
                argmax[i] = vec![0; y.len()];
                pool::maxpool_forward_reference(&mut y, &mut argmax[i], x, s);
            }
            Layer::Dropout { p: prob } => match train {
                Some((step, dropout_seed)) => {
                    let cfg = dropout::DropoutConfig {
                        n: y.len(),
                        p: prob,
                        seed: dropout_seed,
                        layer: i as u32,
                    };
                    dropout::dropout_forward_reference(&mut y, x, cfg, step);
                }
                None => y.copy_from_slice(x),
            },
            Layer::Flatten => y.copy_from_slice(x),
        }
        acts.push(y);
    }
    (acts, argmax)
}

/// One step on `input` [batch, 1, 28, 28] with `labels`; dropout masks as the GPU draws them
/// at global step `step` with `dropout_seed`.
pub fn train_step(
    spec: &ModelSpec,
    params: &[LayerParams],
    input: &[f32],
    labels: &[u32],
    step: u32,
    dropout_seed: u32,
) -> StepReference {
    let batch = labels.len();
    let (acts, argmax) = forward(spec, params, input, Some((step, dropout_seed)));
    let logits = acts.last().expect("logits").clone();
    let xs = softmax_xent::XentShape {
        batch,
        classes: NUM_CLASSES,
        smoothing: 0.0,
    };
    let mut dy = vec![0f32; logits.len()];
    let (loss_sum, _) = softmax_xent::softmax_xent_reference(&mut dy, &logits, labels, xs);

    let mut grads = Vec::new();
    for (i, layer) in spec.layers.iter().enumerate().rev() {
        let x = &acts[i];
        let si = spec.input(i);
        let mut dx = vec![0f32; x.len()];
        let p = &params[i];
        match *layer {
            Layer::Conv { out, .. } => {
                let s = shapes::conv(spec, i, batch);
                let (mut dw, mut db) = (vec![0.0; p.weight.len()], vec![0.0; out]);
                conv2d::conv2d_backward_reference(&mut dx, &mut dw, &mut db, &dy, x, &p.weight, s);
                grads.push((format!("{i}.bias"), db));
                grads.push((format!("{i}.weight"), dw));
            }
            Layer::Linear { out } => {
                let s = shapes::linear(spec, i, batch);
                let (mut dw, mut db) = (vec![0.0; p.weight.len()], vec![0.0; out]);
                matmul::linear_backward_reference(&mut dx, &mut dw, &mut db, &dy, x, &p.weight, s);
                grads.push((format!("{i}.bias"), db));
                grads.push((format!("{i}.weight"), dw));
            }
            Layer::BatchNorm => {
                let s = shapes::batch_norm(spec, i, batch);
                let (mut dg, mut db) = (vec![0.0; si.c], vec![0.0; si.c]);
                batchnorm::batchnorm_backward_reference(
                    &mut dx, &mut dg, &mut db, &dy, x, &p.weight, s,
                );
                grads.push((format!("{i}.bias"), db));
                grads.push((format!("{i}.weight"), dg));
            }
            Layer::Relu => elementwise::relu_backward_reference(&mut dx, &dy, x),
            Layer::MaxPool { .. } => {
                let s = shapes::pool(spec, i, batch);
                pool::maxpool_backward_reference(&mut dx, &dy, &argmax[i], s);
            }
            Layer::Dropout { p: prob } => {
                let cfg = dropout::DropoutConfig {
                    n: shapes::elements(spec, i, batch),
                    p: prob,
                    seed: dropout_seed,
                    layer: i as u32,
                };
                dropout::dropout_backward_reference(&mut dx, &dy, cfg, step);
            }
            Layer::Flatten => dx.copy_from_slice(&dy),
        }
        dy = dx;
    }
    grads.reverse();
    StepReference {
        logits,
        loss: loss_sum / batch as f64,
        grads,
    }
}
