//! Batch normalisation (`shaders/batchnorm.wgsl`) for NCHW (`hw` = H*W) and NC (`hw` = 1),
//! PyTorch BatchNorm2d/1d semantics: biased batch variance to normalise, unbiased variance
//! into the running estimate, `running = (1 - momentum) * running + momentum * batch`.
//!
//! Variants (`kernels::select::batchnorm`): one workgroup per channel, scalar or vec4
//! (batchnorm.wgsl), or per plane with two-level reductions for hardware GPUs (`planes.rs`,
//! `shaders/batchnorm_planes.wgsl`). The CPU references are in `reference.rs`.

mod planes;
mod reference;
pub use reference::*;

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
    pub const PLANE_SUMS: u32 = 17;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    /// Backward: zero dx where x <= this (0 for `batchnorm_backward`'s `relu_input`, else
    /// -inf).
    pub(crate) mask_below: f32,
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
            mask_below: f32::NEG_INFINITY,
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
    if variant(gpu, s) == Variant::Vec4 {
        (format!("{name}4"), true)
    } else {
        (name.to_string(), false)
    }
}

/// Where an input gradient is zeroed: where x <= 0 for a ReLU's output, else nowhere.
pub(crate) fn mask_below(relu_input: bool) -> f32 {
    if relu_input {
        0.0
    } else {
        f32::NEG_INFINITY
    }
}

fn variant(gpu: &Gpu, s: &BatchNormShape) -> Variant {
    select::batchnorm::choose(&gpu.caps, s.hw)
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

/// Batch statistics (saved for the backward) and the running-statistics update: one
/// dispatch, or two with the two-level reduction (`Tiled`).
pub fn batchnorm_stats(
    gpu: &Gpu,
    s: BatchNormShape,
    t: &BatchNormTensors,
    x: &Tensor,
) -> Result<Vec<Dispatch>> {
    let desc = s.describe();
    t.check("batchnorm_stats", &s)?;
    check_len("batchnorm_stats", &desc, x, s.len())?;
    if variant(gpu, &s) == Variant::Tiled {
        return Ok(planes::stats(gpu, &s, &s.params()?, t, x)?.into());
    }
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
    Ok(vec![gpu
        .dispatch(
            &BATCHNORM,
            &stats_entry,
            &desc,
            &stats_bindings,
            channels(&s),
        )?
        .with_cost(4.0 * s.len() as f64, 8.0 * s.len() as f64)])
}

/// Training forward: batch statistics (and running-stat update), then normalisation.
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    s: BatchNormShape,
    t: &BatchNormTensors,
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let desc = s.describe();
    check_len("batchnorm_forward_train", &desc, y, s.len())?;
    let mut out = batchnorm_stats(gpu, s, t, x)?;
    if variant(gpu, &s) == Variant::Tiled {
        out.push(planes::normalize(gpu, &s, &s.params()?, t, x, y, false)?);
        return Ok(out);
    }
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
    out.push(norm);
    Ok(out)
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
    if variant(gpu, &s) == Variant::Tiled {
        return planes::normalize(gpu, &s, &s.params()?, t, x, y, true);
    }
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
    p.mask_below = mask_below(relu_input);
    if variant(gpu, &s) == Variant::Tiled {
        return planes::backward(gpu, &s, &p, t, x, dy, dx, dgamma, dbeta);
    }
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
