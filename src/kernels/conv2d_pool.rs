//! A first-layer block in one pass (`shaders/conv2d_pool.wgsl`): a 3x3, stride-1
//! convolution of a 1-channel input, an optional ReLU and a 2x2, stride-2 max pool, writing
//! only the pooled output and its argmax (as `pool::maxpool_forward` writes them, so the
//! pool's backward runs unchanged). The convolution's output is never written: with one
//! input channel, writing it and reading it back was nearly all the separate kernels' time
//! on lavapipe. `net::fuse` uses it where `applies` holds (cnn1's first block).

use super::conv2d::{conv2d_forward_reference, Conv2dShape};
use super::elementwise::relu_forward_reference;
use super::pool::{maxpool_forward_reference, PoolShape};
use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, CONV2D_POOL};
use bytemuck::{Pod, Zeroable};

/// Output channels the kernel's uniform weight table holds.
pub const MAX_CHANNELS: usize = 64;
/// Floats of the packed weight table (3 vec4 per channel: 9 taps, the bias, 2 zeros).
pub const TABLE_LEN: usize = MAX_CHANNELS * 12;
const WG: u32 = 64;

mod binding {
    pub const P: u32 = 0;
    pub const TABLE: u32 = 1;
    pub const X: u32 = 2;
    pub const Y: u32 = 3;
    pub const ARGMAX: u32 = 4;
    pub const WEIGHT: u32 = 5;
    pub const BIAS: u32 = 6;
    pub const PACKED: u32 = 7;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    pad: u32,
    co: u32,
    oh: u32,
    ow: u32,
    ph: u32,
    pw: u32,
    relu: u32,
    _pad: [u32; 2],
}

/// Does the fused kernel compute `conv` followed by (a ReLU and) `pool`?
pub fn applies(conv: Conv2dShape, pool: PoolShape) -> bool {
    conv.ci == 1
        && (conv.kh, conv.kw, conv.stride) == (3, 3, 1)
        && conv.co <= MAX_CHANNELS
        && (pool.k, pool.stride) == (2, 2)
        && (pool.n, pool.c, pool.h, pool.w) == (conv.n, conv.co, conv.oh(), conv.ow())
}

/// y, argmax = maxpool(relu?(conv(x, w, b))); `table` is scratch for the packed weights
/// (`Gpu::uniform_table` of `TABLE_LEN`). All outputs are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_maxpool(
    gpu: &Gpu,
    conv: Conv2dShape,
    pool: PoolShape,
    relu: bool,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    table: &Tensor,
    y: &Tensor,
    argmax: &Tensor,
) -> Result<[Dispatch; 2]> {
    let desc = format!("{} then {}", conv.describe(), pool.describe());
    if !applies(conv, pool) {
        return Err(GpuError::Shape {
            label: "conv2d_relu_maxpool".into(),
            message: format!("not a 1-channel 3x3 convolution into a 2x2 pool: {desc}"),
        });
    }
    check_len("conv2d_relu_maxpool", &desc, x, conv.input_len())?;
    check_len("conv2d_relu_maxpool", &desc, w, conv.weight_len())?;
    check_len("conv2d_relu_maxpool", &desc, b, conv.co)?;
    check_len("conv2d_relu_maxpool", &desc, table, TABLE_LEN)?;
    check_len("conv2d_relu_maxpool", &desc, y, pool.output_len())?;
    check_len("conv2d_relu_maxpool", &desc, argmax, pool.output_len())?;
    let d = |v| dim("conv2d_relu_maxpool", v);
    let p = gpu.uniform(
        "conv2d_relu_maxpool params",
        &Params {
            n: d(conv.n)?,
            h: d(conv.h)?,
            w: d(conv.w)?,
            pad: d(conv.pad)?,
            co: d(conv.co)?,
            oh: d(conv.oh())?,
            ow: d(conv.ow())?,
            ph: d(pool.oh())?,
            pw: d(pool.ow())?,
            relu: relu as u32,
            _pad: [0; 2],
        },
    );
    let pack = gpu.dispatch(
        &CONV2D_POOL,
        "conv2d_pool_pack",
        &desc,
        &[
            (binding::P, &p),
            (binding::WEIGHT, &w),
            (binding::BIAS, &b),
            (binding::PACKED, &table),
        ],
        gpu.caps.grid(MAX_CHANNELS, WG),
    )?;
    let flops = 2.0 * 9.0 * (conv.n * conv.co * 4 * pool.oh() * pool.ow()) as f64;
    let fused = gpu
        .dispatch(
            &CONV2D_POOL,
            "conv2d_relu_maxpool",
            &desc,
            &[
                (binding::P, &p),
                (binding::TABLE, &table),
                (binding::X, &x),
                (binding::Y, &y),
                (binding::ARGMAX, &argmax),
            ],
            gpu.caps.grid(conv.n * pool.oh() * pool.ow(), WG),
        )?
        .with_cost(
            flops,
            4.0 * (conv.input_len() + 2 * pool.output_len()) as f64,
        );
    Ok([pack, fused])
}

/// The CPU reference: the layers one after the other.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_maxpool_reference(
    y: &mut [f32],
    argmax: &mut [u32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    conv: Conv2dShape,
    pool: PoolShape,
    relu: bool,
) {
    let mut c = vec![0.0; conv.output_len()];
    conv2d_forward_reference(&mut c, x, w, b, conv);
    if relu {
        let pre = c.clone();
        relu_forward_reference(&mut c, &pre);
    }
    maxpool_forward_reference(y, argmax, &c, pool);
    if relu {
        // The pool's fused ReLU marks outputs no gradient reaches (pool.wgsl's BLOCKED).
        for (a, &v) in argmax.iter_mut().zip(y.iter()) {
            if v <= 0.0 {
                *a |= 0x8000_0000;
            }
        }
    }
}
