//! Max pooling (`shaders/pool.wgsl`): square window, stride, no padding, floor mode, as
//! nn.MaxPool2d(k, stride). The forward records each output's argmax (index within its
//! input plane, first maximum on ties) for the backward.

use super::{check_len, dim};
use crate::gpu::{grid, Dispatch, Gpu, GpuError, Result, Tensor, POOL};
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
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
    fn params(&self) -> Result<Params> {
        if self.k == 0
            || self.stride == 0
            || self.k > self.h
            || self.k > self.w
            || self.input_len() == 0
        {
            return Err(GpuError::Shape {
                label: "maxpool".into(),
                message: format!("invalid pooling {}", self.describe()),
            });
        }
        let d = |v| dim("maxpool", v);
        Ok(Params {
            n: d(self.n)?,
            c: d(self.c)?,
            h: d(self.h)?,
            w: d(self.w)?,
            oh: d(self.oh())?,
            ow: d(self.ow())?,
            k: d(self.k)?,
            stride: d(self.stride)?,
        })
    }
}

const WG: u32 = 256;

/// y = max over each window; argmax (u32) records where it came from. Overwrites both.
pub fn maxpool_forward(
    gpu: &Gpu,
    s: PoolShape,
    x: &Tensor,
    y: &Tensor,
    argmax: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("maxpool_forward", &desc, x, s.input_len())?;
    check_len("maxpool_forward", &desc, y, s.output_len())?;
    check_len("maxpool_forward", &desc, argmax, s.output_len())?;
    let p = gpu.uniform("maxpool params", &p);
    gpu.dispatch(
        &POOL,
        "maxpool_forward_rows",
        &desc,
        &[(0, &p), (1, &x.buffer), (2, &y.buffer), (3, &argmax.buffer)],
        grid(s.n * s.c * s.oh(), WG),
    )
    .map(|d| {
        d.with_cost(
            (s.output_len() * s.k * s.k) as f64,
            4.0 * (s.input_len() + 2 * s.output_len()) as f64,
        )
    })
}

/// dx = dy routed back to each window's argmax (summed where windows overlap). Overwrites dx.
pub fn maxpool_backward(
    gpu: &Gpu,
    s: PoolShape,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("maxpool_backward", &desc, dy, s.output_len())?;
    check_len("maxpool_backward", &desc, argmax, s.output_len())?;
    check_len("maxpool_backward", &desc, dx, s.input_len())?;
    let p = gpu.uniform("maxpool params", &p);
    if s.k == s.stride {
        // Disjoint windows: one invocation per output writes its window.
        return gpu
            .dispatch(
                &POOL,
                "maxpool_backward_tiled_rows",
                &desc,
                &[
                    (0, &p),
                    (3, &argmax.buffer),
                    (4, &dy.buffer),
                    (6, &dx.buffer),
                ],
                grid(s.n * s.c * s.oh(), WG),
            )
            .map(|d| d.with_cost(0.0, 4.0 * (s.input_len() + 2 * s.output_len()) as f64));
    }
    gpu.dispatch(
        &POOL,
        "maxpool_backward",
        &desc,
        &[
            (0, &p),
            (3, &argmax.buffer),
            (4, &dy.buffer),
            (5, &dx.buffer),
        ],
        grid(s.input_len().div_ceil(4), WG),
    )
    .map(|d| d.with_cost(0.0, 4.0 * (s.input_len() + 2 * s.output_len()) as f64))
}

pub fn maxpool_forward_reference(y: &mut [f32], argmax: &mut [u32], x: &[f32], s: PoolShape) {
    let (oh, ow) = (s.oh(), s.ow());
    for plane in 0..s.n * s.c {
        let base = plane * s.h * s.w;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut best_i = 0;
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let i = (oy * s.stride + ky) * s.w + ox * s.stride + kx;
                        if x[base + i] > best || (ky == 0 && kx == 0) {
                            best = x[base + i];
                            best_i = i;
                        }
                    }
                }
                let o = (plane * oh + oy) * ow + ox;
                y[o] = best;
                argmax[o] = best_i as u32;
            }
        }
    }
}

pub fn maxpool_backward_reference(dx: &mut [f32], dy: &[f32], argmax: &[u32], s: PoolShape) {
    dx.fill(0.0);
    let plane_out = s.oh() * s.ow();
    for (o, (&g, &a)) in dy.iter().zip(argmax).enumerate() {
        let plane = o / plane_out;
        dx[plane * s.h * s.w + a as usize] += g;
    }
}
