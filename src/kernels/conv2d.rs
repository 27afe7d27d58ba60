//! 2-D convolution (`shaders/conv2d.wgsl`): forward, backward to the input, to the weight
//! and to the bias. NCHW, weight [CO, CI, KH, KW], one stride and one zero padding for both
//! axes, as nn.Conv2d(ci, co, k, stride, padding).

use super::{check_len, dim};
use crate::gpu::{grid, Dispatch, Gpu, GpuError, Result, Tensor, CONV2D};
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    kh: u32,
    kw: u32,
    oh: u32,
    ow: u32,
    stride: u32,
    pad: u32,
    _pad: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dShape {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad).saturating_sub(self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad).saturating_sub(self.kw) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.n * self.ci * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.n * self.co * self.oh() * self.ow()
    }
    pub fn weight_len(&self) -> usize {
        self.co * self.ci * self.kh * self.kw
    }
    /// Bytes one pass must move at least: input, weight and output once each.
    pub fn bytes(&self) -> f64 {
        4.0 * (self.input_len() + self.weight_len() + self.output_len()) as f64
    }
    /// Multiply-adds x2 of the forward pass (each backward pass costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64 * (self.ci * self.kh * self.kw) as f64
    }
    pub fn describe(&self) -> String {
        format!(
            "x[{},{},{},{}] w[{},{},{},{}] stride {} pad {}",
            self.n, self.ci, self.h, self.w, self.co, self.ci, self.kh, self.kw, self.stride, self.pad
        )
    }
    fn validate(&self) -> Result<()> {
        let fits = self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw;
        if self.stride == 0 || !fits || self.n == 0 || self.ci == 0 || self.co == 0 {
            return Err(GpuError::Shape {
                label: "conv2d".into(),
                message: format!("invalid convolution {}", self.describe()),
            });
        }
        Ok(())
    }
    fn params(&self) -> Result<Params> {
        self.validate()?;
        let d = |v| dim("conv2d", v);
        Ok(Params {
            n: d(self.n)?,
            ci: d(self.ci)?,
            h: d(self.h)?,
            w: d(self.w)?,
            co: d(self.co)?,
            kh: d(self.kh)?,
            kw: d(self.kw)?,
            oh: d(self.oh())?,
            ow: d(self.ow())?,
            stride: d(self.stride)?,
            pad: d(self.pad)?,
            _pad: 0,
        })
    }
}

const WG: u32 = 64;
const BLOCK: usize = 4;

/// y = conv(x, w) + b (overwrites y).
pub fn conv2d_forward(gpu: &Gpu, s: Conv2dShape, x: &Tensor, w: &Tensor, b: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_forward", &desc, x, s.input_len())?;
    check_len("conv2d_forward", &desc, w, s.weight_len())?;
    check_len("conv2d_forward", &desc, b, s.co)?;
    check_len("conv2d_forward", &desc, y, s.output_len())?;
    let p = gpu.uniform("conv2d params", &p);
    let threads = s.n * s.co.div_ceil(BLOCK) * s.oh() * s.ow().div_ceil(BLOCK);
    gpu.dispatch(
        &CONV2D,
        "conv2d_forward",
        &desc,
        &[(0, &p), (1, &x.buffer), (2, &w.buffer), (3, &b.buffer), (4, &y.buffer)],
        grid(threads, WG),
    )
    .map(|d| d.with_cost(s.flops(), s.bytes()))
}

/// dx = conv_transpose(dy, w) (overwrites dx).
pub fn conv2d_backward_input(gpu: &Gpu, s: Conv2dShape, dy: &Tensor, w: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_input", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_input", &desc, w, s.weight_len())?;
    check_len("conv2d_backward_input", &desc, dx, s.input_len())?;
    let p = gpu.uniform("conv2d params", &p);
    let threads = s.n * s.ci.div_ceil(BLOCK) * s.h * s.w.div_ceil(BLOCK);
    gpu.dispatch(
        &CONV2D,
        "conv2d_backward_input",
        &desc,
        &[(0, &p), (2, &w.buffer), (5, &dy.buffer), (6, &dx.buffer)],
        grid(threads, WG),
    )
    .map(|d| d.with_cost(s.flops(), s.bytes()))
}

/// dw = correlation of x with dy over the batch (overwrites dw).
pub fn conv2d_backward_weight(gpu: &Gpu, s: Conv2dShape, dy: &Tensor, x: &Tensor, dw: &Tensor) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_weight", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_weight", &desc, x, s.input_len())?;
    check_len("conv2d_backward_weight", &desc, dw, s.weight_len())?;
    let p = gpu.uniform("conv2d params", &p);
    let threads = s.co.div_ceil(BLOCK) * s.ci * s.kh * s.kw;
    gpu.dispatch(
        &CONV2D,
        "conv2d_backward_weight",
        &desc,
        &[(0, &p), (1, &x.buffer), (5, &dy.buffer), (7, &dw.buffer)],
        grid(threads, WG),
    )
    .map(|d| d.with_cost(s.flops(), s.bytes()))
}

/// db = sum of dy over batch and space (overwrites db).
pub fn conv2d_backward_bias(gpu: &Gpu, s: Conv2dShape, dy: &Tensor, db: &Tensor) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_bias", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_bias", &desc, db, s.co)?;
    let p = gpu.uniform("conv2d params", &p);
    gpu.dispatch(&CONV2D, "conv2d_backward_bias", &desc, &[(0, &p), (5, &dy.buffer), (8, &db.buffer)], [s.co as u32, 1, 1])
        .map(|d| d.with_cost(s.output_len() as f64, 4.0 * s.output_len() as f64))
}

/// Input index of output (oy, ox) through tap (ky, kx), or None in the padding.
fn tap(s: &Conv2dShape, o: usize, k: usize, size: usize) -> Option<usize> {
    let i = (o * s.stride + k) as isize - s.pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

pub fn conv2d_forward_reference(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], s: Conv2dShape) {
    let (oh, ow) = (s.oh(), s.ow());
    for n in 0..s.n {
        for co in 0..s.co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co] as f64;
                    for ci in 0..s.ci {
                        for ky in 0..s.kh {
                            let Some(iy) = tap(&s, oy, ky, s.h) else { continue };
                            for kx in 0..s.kw {
                                let Some(ix) = tap(&s, ox, kx, s.w) else { continue };
                                acc += x[((n * s.ci + ci) * s.h + iy) * s.w + ix] as f64
                                    * w[((co * s.ci + ci) * s.kh + ky) * s.kw + kx] as f64;
                            }
                        }
                    }
                    y[((n * s.co + co) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
}

/// Gradients of the convolution: dx, dw, db (all overwritten).
pub fn conv2d_backward_reference(
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    s: Conv2dShape,
) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut gx = vec![0f64; dx.len()];
    let mut gw = vec![0f64; dw.len()];
    let mut gb = vec![0f64; db.len()];
    for n in 0..s.n {
        for co in 0..s.co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.co + co) * oh + oy) * ow + ox] as f64;
                    gb[co] += g;
                    for ci in 0..s.ci {
                        for ky in 0..s.kh {
                            let Some(iy) = tap(&s, oy, ky, s.h) else { continue };
                            for kx in 0..s.kw {
                                let Some(ix) = tap(&s, ox, kx, s.w) else { continue };
                                let xi = ((n * s.ci + ci) * s.h + iy) * s.w + ix;
                                let wi = ((co * s.ci + ci) * s.kh + ky) * s.kw + kx;
                                gx[xi] += g * w[wi] as f64;
                                gw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    for (o, v) in dx.iter_mut().zip(gx) {
        *o = v as f32;
    }
    for (o, v) in dw.iter_mut().zip(gw) {
        *o = v as f32;
    }
    for (o, v) in db.iter_mut().zip(gb) {
        *o = v as f32;
    }
}
