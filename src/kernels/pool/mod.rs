//! Max pooling (`shaders/pool.wgsl`): square window, stride, no padding, floor mode, as
//! nn.MaxPool2d(k, stride). The forward records each output's argmax (index within its
//! input plane, first maximum on ties) for the backward.

use super::batchnorm::BatchNormTensors;
use super::select::{self, Variant};
use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, POOL};
use bytemuck::{Pod, Zeroable};

mod fused_backward;
mod reference;
pub use fused_backward::*;
pub use reference::*;

/// Binding numbers of pool.wgsl, named as the WGSL names them.
#[allow(dead_code)]
pub(super) mod binding {
    pub const P: u32 = 0;
    pub const X: u32 = 1;
    pub const Y: u32 = 2;
    pub const ARGMAX: u32 = 3;
    pub const DY: u32 = 4;
    pub const DX1: u32 = 6;
    pub const COUNTER: u32 = 8;
    pub const GAMMA: u32 = 9;
    pub const BETA: u32 = 10;
    pub const STAT_A: u32 = 11;
    pub const STAT_B: u32 = 12;
    pub const SAVE_STATS: u32 = 13;
    pub const DGAMMA: u32 = 14;
    pub const DBETA: u32 = 15;
    pub const ROW_SUMS: u32 = 16;
    pub const CONV_DB: u32 = 17;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(super) struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    fused: u32,
    seed: u32,
    pre_layer: u32,
    post_layer: u32,
    pre_p: f32,
    pre_scale: f32,
    post_p: f32,
    post_scale: f32,
    batch_norm: u32,
    eps: f32,
    /// maxpool_backward_batchnorm: zero dx where x <= this (its `relu_input`).
    mask_below: f32,
    /// maxpool_conv_bias_reduce: partial sums per plane in its scratch.
    sums_per_plane: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
}

/// Activation layers applied inside the pool (see shaders/pool.wgsl): a ReLU and/or a
/// dropout right before it, a dropout right after it. Their tensors are never materialised.
/// Dropout masks are those of `kernels::dropout` for the given layer index and seed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolFusion {
    pub relu: bool,
    pub pre_dropout: Option<Dropout>,
    pub post_dropout: Option<Dropout>,
    /// The run's dropout seed.
    pub seed: u32,
}

/// A batch norm applied inside the pool's forward, before the fused activations. Its
/// statistics come from its own kernel (`batchnorm_stats` when training, the running
/// estimates when evaluating). Its backward runs in `maxpool_backward_batchnorm` with
/// tiling windows; otherwise `maxpool_backward` gives dL/d(batch-norm output) for the batch
/// norm's own backward (`net::fuse` decides which).
pub struct FusedBatchNorm<'a> {
    pub tensors: &'a BatchNormTensors<'a>,
    /// Batch statistics (training) or running statistics (evaluating).
    pub training: bool,
    pub eps: f32,
}

/// A fused dropout layer: its index in the model (its mask stream) and drop probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub layer: u32,
    pub p: f32,
}

impl PoolShape {
    pub fn oh(&self) -> usize {
        self.h.saturating_sub(self.k) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        self.w.saturating_sub(self.k) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.n * self.c * self.oh() * self.ow()
    }
    pub fn describe(&self) -> String {
        format!(
            "x[{},{},{},{}] k={} stride={}",
            self.n, self.c, self.h, self.w, self.k, self.stride
        )
    }
    fn params(&self, f: &PoolFusion) -> Result<Params> {
        // Plane indices must leave the argmax's two top bits free (see shaders/pool.wgsl).
        if self.k == 0
            || self.stride == 0
            || self.k > self.h
            || self.k > self.w
            || self.input_len() == 0
            || self.h * self.w >= 1 << 30
        {
            return Err(GpuError::Shape {
                label: "maxpool".into(),
                message: format!("invalid pooling {}", self.describe()),
            });
        }
        let d = |v| dim("maxpool", v);
        let scale = |p: f32| if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let (pre, post) = (f.pre_dropout, f.post_dropout);
        Ok(Params {
            n: d(self.n)?,
            c: d(self.c)?,
            h: d(self.h)?,
            w: d(self.w)?,
            oh: d(self.oh())?,
            ow: d(self.ow())?,
            k: d(self.k)?,
            stride: d(self.stride)?,
            fused: f.relu as u32 | (pre.is_some() as u32) << 1 | (post.is_some() as u32) << 2,
            seed: f.seed,
            pre_layer: pre.map_or(0, |d| d.layer),
            post_layer: post.map_or(0, |d| d.layer),
            pre_p: pre.map_or(0.0, |d| d.p),
            pre_scale: pre.map_or(1.0, |d| scale(d.p)),
            post_p: post.map_or(0.0, |d| d.p),
            post_scale: post.map_or(1.0, |d| scale(d.p)),
            batch_norm: 0,
            eps: 0.0,
            mask_below: f32::NEG_INFINITY,
            sums_per_plane: 0,
        })
    }
    pub fn rows(&self) -> usize {
        self.n * self.c * self.oh()
    }
    fn cost(&self) -> f64 {
        4.0 * (self.input_len() + 2 * self.output_len()) as f64
    }
}

pub(super) const WG: u32 = 256;

/// Which of the pool's kernels a variant is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    Forward,
    Backward,
    BackwardConvBias,
    BackwardBatchNorm,
}

/// The variant `v` asks for (`Auto`: the tuner's measurement where it runs, else
/// `select::pool::choose`), or why it cannot run.
pub(super) fn resolve(gpu: &Gpu, v: Variant, s: &PoolShape, pass: Pass) -> Result<Variant> {
    let applicable = select::pool::applicable();
    match v {
        Variant::Auto => {
            let fallback = select::pool::choose(&gpu.caps);
            Ok(match super::tune::Tuner::of(gpu) {
                Some(t) if !select::forced(&gpu.caps, &applicable) => {
                    let key = super::tune::shape_key("pool", &(s, pass));
                    t.choose(gpu, key, &applicable, fallback, |v, size| {
                        // The probe: 4 images.
                        let shape = match size {
                            super::tune::Size::Full => *s,
                            super::tune::Size::Probe => PoolShape {
                                n: s.n.min(4),
                                ..*s
                            },
                        };
                        pass_on_scratch(gpu, v, shape, pass)
                    })
                }
                _ => fallback,
            })
        }
        v if applicable.contains(&v) => Ok(v),
        v => Err(GpuError::Shape {
            label: "maxpool".into(),
            message: format!("no {v} max-pool kernel"),
        }),
    }
}

/// `pass` with variant `v` on zeroed scratch tensors of shape `s` (for timing).
fn pass_on_scratch(gpu: &Gpu, v: Variant, s: PoolShape, pass: Pass) -> Result<Vec<Dispatch>> {
    let z = |label, len| gpu.zeros(label, len);
    let (x, dx) = (z("tune x", s.input_len())?, z("tune dx", s.input_len())?);
    let (y, argmax) = (
        z("tune y", s.output_len())?,
        z("tune argmax", s.output_len())?,
    );
    let counter = z("tune counter", 4)?;
    let f = PoolFusion::default();
    Ok(match pass {
        Pass::Forward => vec![maxpool_forward_with(
            gpu, v, s, f, None, &counter, &x, &y, &argmax,
        )?],
        Pass::Backward => vec![maxpool_backward_with(gpu, v, s, f, &y, &argmax, &dx)?],
        Pass::BackwardConvBias => {
            let (sums, db) = (z("tune sums", s.rows())?, z("tune db", s.c)?);
            maxpool_backward_conv_bias_with(gpu, v, s, f, &y, &argmax, &dx, &sums, &db)?.into()
        }
        Pass::BackwardBatchNorm => {
            let c = |label| z(label, s.c);
            let (gamma, beta, mean, var) = (
                c("tune gamma")?,
                c("tune beta")?,
                c("tune mean")?,
                c("tune var")?,
            );
            let (stats, dgamma, dbeta) = (
                z("tune stats", 2 * s.c)?,
                c("tune dgamma")?,
                c("tune dbeta")?,
            );
            let t = BatchNormTensors {
                gamma: &gamma,
                beta: &beta,
                running_mean: &mean,
                running_var: &var,
                save_stats: &stats,
            };
            maxpool_backward_batchnorm_with(
                gpu, v, s, f, &t, &x, &y, &argmax, &dx, &dgamma, &dbeta, false,
            )?
            .into()
        }
    })
}

/// y = post(max over each window of pre(x)); argmax (u32) records where in the input plane
/// the maximum came from (and, in its top bits, whether the fused layers stop the gradient
/// there). Overwrites both. `counter` is the step counter the fused dropout
/// masks read (any tensor when nothing is fused).
#[allow(clippy::too_many_arguments)]
pub fn maxpool_forward(
    gpu: &Gpu,
    s: PoolShape,
    fusion: PoolFusion,
    batch_norm: Option<FusedBatchNorm>,
    counter: &Tensor,
    x: &Tensor,
    y: &Tensor,
    argmax: &Tensor,
) -> Result<Dispatch> {
    maxpool_forward_with(
        gpu,
        Variant::Auto,
        s,
        fusion,
        batch_norm,
        counter,
        x,
        y,
        argmax,
    )
}

/// `maxpool_forward` with variant `v`: `Generic` one invocation per output row, `Tiled` one
/// per output.
#[allow(clippy::too_many_arguments)]
pub fn maxpool_forward_with(
    gpu: &Gpu,
    v: Variant,
    s: PoolShape,
    fusion: PoolFusion,
    batch_norm: Option<FusedBatchNorm>,
    counter: &Tensor,
    x: &Tensor,
    y: &Tensor,
    argmax: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    let mut p = s.params(&fusion)?;
    check_len("maxpool_forward", &desc, x, s.input_len())?;
    check_len("maxpool_forward", &desc, y, s.output_len())?;
    check_len("maxpool_forward", &desc, argmax, s.output_len())?;
    // Without a batch norm its bindings are never read; any buffer fills them.
    let (gamma, beta, stat_a, stat_b) = match &batch_norm {
        Some(bn) => {
            let t = bn.tensors;
            for v in [t.gamma, t.beta, t.running_mean, t.running_var] {
                check_len("maxpool_forward", &desc, v, s.c)?;
            }
            check_len("maxpool_forward", &desc, t.save_stats, 2 * s.c)?;
            p.eps = bn.eps;
            if bn.training {
                p.batch_norm = 1;
                (t.gamma, t.beta, t.save_stats, t.save_stats)
            } else {
                p.batch_norm = 2;
                (t.gamma, t.beta, t.running_mean, t.running_var)
            }
        }
        None => (x, x, x, x),
    };
    let p = gpu.uniform("maxpool params", &p);
    let (entry, threads) = match resolve(gpu, v, &s, Pass::Forward)? {
        Variant::Tiled => ("maxpool_forward_elements", s.output_len()),
        _ => ("maxpool_forward", s.rows()),
    };
    gpu.dispatch(
        &POOL,
        entry,
        &desc,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::Y, &y),
            (binding::ARGMAX, &argmax),
            (binding::COUNTER, &counter),
            (binding::GAMMA, &gamma),
            (binding::BETA, &beta),
            (binding::STAT_A, &stat_a),
            (binding::STAT_B, &stat_b),
        ],
        gpu.caps.grid(threads, WG),
    )
    .map(|d| d.with_cost((s.output_len() * s.k * s.k) as f64, s.cost()))
}

/// dx = dy routed back through the fused layers to each window's argmax (summed where
/// windows overlap), with the forward's argmax (whose top bits say where the fused layers
/// stopped the gradient). Overwrites dx.
pub fn maxpool_backward(
    gpu: &Gpu,
    s: PoolShape,
    fusion: PoolFusion,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    maxpool_backward_with(gpu, Variant::Auto, s, fusion, dy, argmax, dx)
}

/// `maxpool_backward` with variant `v`: `Tiled` one invocation per input element always.
pub fn maxpool_backward_with(
    gpu: &Gpu,
    v: Variant,
    s: PoolShape,
    fusion: PoolFusion,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params(&fusion)?;
    check_len("maxpool_backward", &desc, dy, s.output_len())?;
    check_len("maxpool_backward", &desc, argmax, s.output_len())?;
    check_len("maxpool_backward", &desc, dx, s.input_len())?;
    let p = gpu.uniform("maxpool params", &p);
    // Disjoint windows: one invocation per output row writes its windows; else (and in the
    // tiled variant) one per input element gathers from the windows that hold it.
    let tiled = resolve(gpu, v, &s, Pass::Backward)? == Variant::Tiled;
    let (entry, threads) = if s.k == s.stride && !tiled {
        ("maxpool_backward_tiled", s.rows())
    } else {
        ("maxpool_backward", s.input_len())
    };
    gpu.dispatch(
        &POOL,
        entry,
        &desc,
        &[
            (binding::P, &p),
            (binding::ARGMAX, &argmax),
            (binding::DY, &dy),
            (binding::DX1, &dx),
        ],
        gpu.caps.grid(threads, WG),
    )
    .map(|d| d.with_cost(0.0, s.cost()))
}
