//! Inverted dropout (`shaders/dropout.wgsl`) with a counter-based hash RNG: the keep mask of
//! element i at step t of layer l under seed s is `uniform(s, t, l, i) >= p`, the same on
//! the CPU and on every GPU. The step is read from the GPU step counter (`counter[0]`).

use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, DROPOUT};
use bytemuck::{Pod, Zeroable};

/// Binding numbers of dropout.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const X: u32 = 1;
    pub const Y: u32 = 2;
    pub const COUNTER: u32 = 3;
    pub const DY: u32 = 4;
    pub const DX: u32 = 5;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    seed: u32,
    layer: u32,
    _pad0: u32,
    p: f32,
    scale: f32,
    _pad1: [f32; 2],
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutConfig {
    pub n: usize,
    /// Probability of zeroing an element, in [0, 1).
    pub p: f32,
    pub seed: u32,
    /// Distinguishes the layers of one network so their masks are independent.
    pub layer: u32,
}

impl DropoutConfig {
    fn describe(&self) -> String {
        format!("n={} p={} layer={}", self.n, self.p, self.layer)
    }
    fn params(&self) -> Result<Params> {
        if !(0.0..1.0).contains(&self.p) {
            return Err(GpuError::Shape {
                label: "dropout".into(),
                message: format!("probability {} must be in [0, 1)", self.p),
            });
        }
        Ok(Params {
            n: dim("dropout", self.n)?,
            seed: self.seed,
            layer: self.layer,
            _pad0: 0,
            p: self.p,
            scale: scale(self.p),
            _pad1: [0.0; 2],
        })
    }
}

fn scale(p: f32) -> f32 {
    1.0 / (1.0 - p)
}

const WG: u32 = 256;

/// y = x * mask / (1 - p) at the step held in `counter[0]`. Overwrites y.
pub fn dropout_forward(
    gpu: &Gpu,
    cfg: DropoutConfig,
    counter: &Tensor,
    x: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    let desc = cfg.describe();
    check_len("dropout_forward", &desc, x, cfg.n)?;
    check_len("dropout_forward", &desc, y, cfg.n)?;
    let p = gpu.uniform("dropout params", &cfg.params()?);
    gpu.dispatch(
        &DROPOUT,
        "dropout_forward",
        &desc,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::Y, &y),
            (binding::COUNTER, &counter),
        ],
        gpu.caps.grid(cfg.n.div_ceil(4), WG),
    )
    .map(|d| d.with_cost(cfg.n as f64, 8.0 * cfg.n as f64))
}

/// dx = dy * mask / (1 - p) with the same mask as the forward of this step. Overwrites dx.
pub fn dropout_backward(
    gpu: &Gpu,
    cfg: DropoutConfig,
    counter: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    let desc = cfg.describe();
    check_len("dropout_backward", &desc, dy, cfg.n)?;
    check_len("dropout_backward", &desc, dx, cfg.n)?;
    let p = gpu.uniform("dropout params", &cfg.params()?);
    gpu.dispatch(
        &DROPOUT,
        "dropout_backward",
        &desc,
        &[
            (binding::P, &p),
            (binding::COUNTER, &counter),
            (binding::DY, &dy),
            (binding::DX, &dx),
        ],
        gpu.caps.grid(cfg.n.div_ceil(4), WG),
    )
    .map(|d| d.with_cost(cfg.n as f64, 8.0 * cfg.n as f64))
}

/// "lowbias32" (C. Wellons), as in the shader.
pub fn hash(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Uniform in [0, 1) with 24 random bits.
pub fn uniform(seed: u32, step: u32, layer: u32, i: u32) -> f32 {
    let h = hash(i ^ hash(layer ^ hash(step ^ hash(seed))));
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

pub fn keep(cfg: &DropoutConfig, step: u32, i: usize) -> bool {
    uniform(cfg.seed, step, cfg.layer, i as u32) >= cfg.p
}

pub fn dropout_forward_reference(y: &mut [f32], x: &[f32], cfg: DropoutConfig, step: u32) {
    for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        *o = if keep(&cfg, step, i) {
            v * scale(cfg.p)
        } else {
            0.0
        };
    }
}

pub fn dropout_backward_reference(dx: &mut [f32], dy: &[f32], cfg: DropoutConfig, step: u32) {
    dropout_forward_reference(dx, dy, cfg, step);
}
