//! Batch normalisation (`shaders/batchnorm.wgsl`) for NCHW (`hw` = H*W) and NC (`hw` = 1),
//! PyTorch BatchNorm2d/1d semantics: biased batch variance to normalise, unbiased variance
//! into the running estimate, `running = (1 - momentum) * running + momentum * batch`.

use super::{check_len, dim, select};
use crate::gpu::{Bindable, Dispatch, Gpu, GpuError, Result, Tensor, Variant, BATCHNORM};
use bytemuck::{Pod, Zeroable};

/// Binding numbers of batchnorm.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const X: u32 = 1;
    pub const Y: u32 = 2;
    pub const GAMMA: u32 = 3;
    pub const BETA: u32 = 4;
    pub const SAVE_STATS: u32 = 5;
    pub const RUNNING_MEAN: u32 = 7;
    pub const RUNNING_VAR: u32 = 8;
    pub const DY: u32 = 9;
    pub const DX: u32 = 10;
    pub const DGAMMA: u32 = 11;
    pub const DBETA: u32 = 12;
    pub const X4: u32 = 13;
    pub const Y4: u32 = 14;
    pub const DY4: u32 = 15;
    pub const DX4: u32 = 16;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    /// Backward: zero dx where x is 0 (`batchnorm_backward`'s `relu_input`).
    relu_mask: u32,
    momentum: f32,
    eps: f32,
    _pad1: [f32; 2],
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormShape {
    pub n: usize,
    pub c: usize,
    /// Spatial size per channel: H*W for BatchNorm2d, 1 for BatchNorm1d.
    pub hw: usize,
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNormShape {
    pub fn new(n: usize, c: usize, hw: usize) -> Self {
        BatchNormShape {
            n,
            c,
            hw,
            momentum: 0.1,
            eps: 1e-5,
        }
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn describe(&self) -> String {
        format!("n={} c={} hw={}", self.n, self.c, self.hw)
    }
    fn params(&self) -> Result<Params> {
        if self.is_empty() {
            return Err(GpuError::Shape {
                label: "batchnorm".into(),
                message: format!("empty shape {}", self.describe()),
            });
        }
        Ok(Params {
            n: dim("batchnorm", self.n)?,
            c: dim("batchnorm", self.c)?,
            hw: dim("batchnorm", self.hw)?,
            relu_mask: 0,
            momentum: self.momentum,
            eps: self.eps,
            _pad1: [0.0; 2],
        })
    }
}

/// Each pass runs one workgroup per channel (see shaders/batchnorm.wgsl). Planes whose size
/// is a multiple of 4 use the vec4 entry points (`name4`): the x/y/dy/dx bindings become
/// their vec4 views (13..16).
fn entry(gpu: &Gpu, s: &BatchNormShape, name: &str) -> (String, bool) {
    if select::batchnorm::choose(&gpu.caps, s.hw) == Variant::Vec4 {
        (format!("{name}4"), true)
    } else {
        (name.to_string(), false)
    }
}

/// The binding of a tensor's scalar view, or of its vec4 view in a vec4 entry point.
fn view(scalar: u32, vec4: u32, use_vec4: bool) -> u32 {
    if use_vec4 {
        vec4
    } else {
        scalar
    }
}

fn channels(s: &BatchNormShape) -> [u32; 3] {
    [s.c as u32, 1, 1]
}

/// The tensors of one batch-norm layer.
pub struct BatchNormTensors<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    /// The batch statistics the training forward saves for the backward: the mean at `[c]`,
    /// 1/sqrt(biased var + eps) at [C + c].
    pub save_stats: &'a Tensor,
}

impl BatchNormTensors<'_> {
    fn check(&self, kernel: &str, s: &BatchNormShape) -> Result<()> {
        for t in [self.gamma, self.beta, self.running_mean, self.running_var] {
            check_len(kernel, &s.describe(), t, s.c)?;
        }
        check_len(kernel, &s.describe(), self.save_stats, 2 * s.c)
    }
}

/// Batch statistics (saved for the backward) and the running-statistics update.
pub fn batchnorm_stats(
    gpu: &Gpu,
    s: BatchNormShape,
    t: &BatchNormTensors,
    x: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    t.check("batchnorm_stats", &s)?;
    check_len("batchnorm_stats", &desc, x, s.len())?;
    let p = gpu.uniform("batchnorm params", &s.params()?);
    let (stats_entry, v4) = entry(gpu, &s, "batchnorm_stats");
    let mut stats_bindings: Vec<(u32, &dyn Bindable)> = vec![
        (binding::P, &p),
        (binding::X, &x),
        (binding::SAVE_STATS, &t.save_stats),
        (binding::RUNNING_MEAN, &t.running_mean),
        (binding::RUNNING_VAR, &t.running_var),
    ];
    if v4 {
        // The shift k is the channel's first element, read through the scalar view.
        stats_bindings.push((binding::X4, &x));
    }
    Ok(gpu
        .dispatch(
            &BATCHNORM,
            &stats_entry,
            &desc,
            &stats_bindings,
            channels(&s),
        )?
        .with_cost(4.0 * s.len() as f64, 8.0 * s.len() as f64))
}

/// Training forward: batch statistics (and running-stat update), then normalisation.
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    s: BatchNormShape,
    t: &BatchNormTensors,
    x: &Tensor,
    y: &Tensor,
) -> Result<[Dispatch; 2]> {
    let desc = s.describe();
    check_len("batchnorm_forward_train", &desc, y, s.len())?;
    let stats = batchnorm_stats(gpu, s, t, x)?;
    let p = gpu.uniform("batchnorm params", &s.params()?);
    let (norm_entry, v4) = entry(gpu, &s, "batchnorm_forward_train");
    let norm = gpu
        .dispatch(
            &BATCHNORM,
            &norm_entry,
            &desc,
            &[
                (binding::P, &p),
                (view(binding::X, binding::X4, v4), &x),
                (view(binding::Y, binding::Y4, v4), &y),
                (binding::GAMMA, &t.gamma),
                (binding::BETA, &t.beta),
                (binding::SAVE_STATS, &t.save_stats),
            ],
            channels(&s),
        )?
        .with_cost(3.0 * s.len() as f64, 8.0 * s.len() as f64);
    Ok([stats, norm])
}

/// Evaluation forward with the running statistics.
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    s: BatchNormShape,
    t: &BatchNormTensors,
    x: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    t.check("batchnorm_forward_eval", &s)?;
    check_len("batchnorm_forward_eval", &desc, x, s.len())?;
    check_len("batchnorm_forward_eval", &desc, y, s.len())?;
    let p = gpu.uniform("batchnorm params", &s.params()?);
    let (name, v4) = entry(gpu, &s, "batchnorm_forward_eval");
    gpu.dispatch(
        &BATCHNORM,
        &name,
        &desc,
        &[
            (binding::P, &p),
            (view(binding::X, binding::X4, v4), &x),
            (view(binding::Y, binding::Y4, v4), &y),
            (binding::GAMMA, &t.gamma),
            (binding::BETA, &t.beta),
            (binding::RUNNING_MEAN, &t.running_mean),
            (binding::RUNNING_VAR, &t.running_var),
        ],
        channels(&s),
    )
    .map(|d| d.with_cost(3.0 * s.len() as f64, 8.0 * s.len() as f64))
}

/// Backward (training mode): dgamma, dbeta, then dx. All three are overwritten. With
/// `relu_input` x is the output of a ReLU fused into the step before, and dx is stored as
/// that ReLU's backward passes it on: zero where x is 0.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    s: BatchNormShape,
    t: &BatchNormTensors,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    relu_input: bool,
) -> Result<[Dispatch; 2]> {
    let mut desc = s.describe();
    if relu_input {
        desc.push_str(" +relu mask");
    }
    t.check("batchnorm_backward", &s)?;
    for v in [x, dy, dx] {
        check_len("batchnorm_backward", &desc, v, s.len())?;
    }
    check_len("batchnorm_backward", &desc, dgamma, s.c)?;
    check_len("batchnorm_backward", &desc, dbeta, s.c)?;
    let mut p = s.params()?;
    p.relu_mask = relu_input as u32;
    let p = gpu.uniform("batchnorm params", &p);
    let (name, v4) = entry(gpu, &s, "batchnorm_backward_reduce");
    let reduce = gpu
        .dispatch(
            &BATCHNORM,
            &name,
            &desc,
            &[
                (binding::P, &p),
                (view(binding::X, binding::X4, v4), &x),
                (binding::SAVE_STATS, &t.save_stats),
                (view(binding::DY, binding::DY4, v4), &dy),
                (binding::DGAMMA, &dgamma),
                (binding::DBETA, &dbeta),
            ],
            channels(&s),
        )?
        .with_cost(5.0 * s.len() as f64, 8.0 * s.len() as f64);
    let (name, v4) = entry(gpu, &s, "batchnorm_backward");
    let input = gpu
        .dispatch(
            &BATCHNORM,
            &name,
            &desc,
            &[
                (binding::P, &p),
                (view(binding::X, binding::X4, v4), &x),
                (binding::GAMMA, &t.gamma),
                (binding::SAVE_STATS, &t.save_stats),
                (view(binding::DY, binding::DY4, v4), &dy),
                (view(binding::DX, binding::DX4, v4), &dx),
                (binding::DGAMMA, &dgamma),
                (binding::DBETA, &dbeta),
            ],
            channels(&s),
        )?
        .with_cost(7.0 * s.len() as f64, 12.0 * s.len() as f64);
    Ok([reduce, input])
}

fn idx(s: &BatchNormShape, b: usize, c: usize, j: usize) -> usize {
    (b * s.c + c) * s.hw + j
}

/// Training forward. Writes y, save_mean, save_invstd; updates running_mean/var in place.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train_reference(
    y: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: BatchNormShape,
) {
    let count = (s.n * s.hw) as f64;
    for c in 0..s.c {
        let vals = || (0..s.n).flat_map(move |b| (0..s.hw).map(move |j| (b, j)));
        let mean = vals().map(|(b, j)| x[idx(&s, b, c, j)] as f64).sum::<f64>() / count;
        let ss = vals()
            .map(|(b, j)| (x[idx(&s, b, c, j)] as f64 - mean).powi(2))
            .sum::<f64>();
        let var = ss / count;
        let unbiased = if count > 1.0 { ss / (count - 1.0) } else { var };
        let invstd = 1.0 / (var + s.eps as f64).sqrt();
        save_mean[c] = mean as f32;
        save_invstd[c] = invstd as f32;
        let m = s.momentum as f64;
        running_mean[c] = ((1.0 - m) * running_mean[c] as f64 + m * mean) as f32;
        running_var[c] = ((1.0 - m) * running_var[c] as f64 + m * unbiased) as f32;
        for (b, j) in vals() {
            let i = idx(&s, b, c, j);
            y[i] = ((x[i] as f64 - mean) * invstd * gamma[c] as f64 + beta[c] as f64) as f32;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval_reference(
    y: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    s: BatchNormShape,
) {
    for (i, out) in y.iter_mut().enumerate() {
        let c = (i / s.hw) % s.c;
        let inv = 1.0 / (running_var[c] as f64 + s.eps as f64).sqrt();
        *out = ((x[i] as f64 - running_mean[c] as f64) * inv * gamma[c] as f64 + beta[c] as f64)
            as f32;
    }
}

/// Training-mode backward: dx, dgamma, dbeta (overwritten), recomputing the batch statistics
/// from x.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_reference(
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    s: BatchNormShape,
) {
    let count = (s.n * s.hw) as f64;
    for c in 0..s.c {
        let vals = || (0..s.n).flat_map(move |b| (0..s.hw).map(move |j| idx(&s, b, c, j)));
        let mean = vals().map(|i| x[i] as f64).sum::<f64>() / count;
        let var = vals().map(|i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / count;
        let invstd = 1.0 / (var + s.eps as f64).sqrt();
        let dg: f64 = vals()
            .map(|i| dy[i] as f64 * (x[i] as f64 - mean) * invstd)
            .sum();
        let db: f64 = vals().map(|i| dy[i] as f64).sum();
        dgamma[c] = dg as f32;
        dbeta[c] = db as f32;
        for i in vals() {
            let xhat = (x[i] as f64 - mean) * invstd;
            dx[i] =
                (gamma[c] as f64 * invstd / count * (count * dy[i] as f64 - db - xhat * dg)) as f32;
        }
    }
}
