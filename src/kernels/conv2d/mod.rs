//! 2-D convolution (`shaders/conv2d.wgsl`): forward, backward to the input, to the weight
//! and to the bias. NCHW, weight [CO, CI, KH, KW], one stride and one zero padding for both
//! axes, as nn.Conv2d(ci, co, k, stride, padding).
//!
//! Variants (chosen in `kernels::select::conv2d`): generic (any shape); `3x3` for 3x3
//! stride-1 kernels, which packs the weights so that 8 output channels x 8 columns
//! accumulate in registers and computes the input gradient as a convolution with flipped
//! weights; `subgroup` for the same shapes with 8-wide subgroups
//! (`shaders/conv2d_subgroup.wgsl`: each weight or output gradient loaded once per subgroup
//! and broadcast); `tiled` implicit matrix products for hardware GPUs
//! (`shaders/conv2d_tiled.wgsl`). The shape and variant check are in `shape.rs`, the CPU
//! reference in `reference.rs`, beside this file.

mod conv3x3;
mod gradients;
mod reference;
mod shape;

use super::{check_len, dim, select};
use crate::gpu::{
    Bindable, Dispatch, Gpu, Result, Shader, Tensor, CONV2D, CONV2D_SUBGROUP, CONV2D_TILED,
};
pub use conv3x3::WeightPacker;
use conv3x3::{conv3x3, oc_pad, Params3};
pub use gradients::*;
pub use reference::{conv2d_backward_reference, conv2d_forward_reference};
pub use select::{conv2d::Pass, Variant};
pub use shape::Conv2dShape;

/// Binding numbers of conv2d.wgsl, conv2d_subgroup.wgsl, conv2d_tiled.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const X: u32 = 1;
    pub const WT: u32 = 2;
    pub const BIAS: u32 = 3;
    pub const Y: u32 = 4;
    pub const DY: u32 = 5;
    pub const DX: u32 = 6;
    pub const DW: u32 = 7;
    pub const DB: u32 = 8;
    pub const DY4: u32 = 9;
    pub const Q: u32 = 20;
    pub const PACKED: u32 = 21;
    pub const PACKED_OUT: u32 = 22;
    pub const SRC: u32 = 23;
    pub const DST: u32 = 24;
    pub const PARTIALS: u32 = 25;
    pub const PACK_JOBS: u32 = 26;
}

const WG: u32 = 64;
const BLOCK: usize = 4;

/// y = conv(x, w) + b (overwrites y).
pub fn conv2d_forward(
    gpu: &Gpu,
    s: Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_forward_with(gpu, Variant::Auto, s, x, w, b, y)
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_with(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    forward(gpu, v, s, x, w, b, y, false, None)
}

/// y = max(conv(x, w) + b, 0): a ReLU right after the convolution, applied as y is stored.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_forward_with(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    forward(gpu, v, s, x, w, b, y, true, None)
}

/// `conv2d_forward_with` (`conv2d_relu_forward_with` with `relu`) whose 3x3 paths leave
/// packing the weights to `packer`'s one dispatch (the other variants need no packing).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_packed(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
    relu: bool,
    packer: &mut WeightPacker,
) -> Result<Vec<Dispatch>> {
    forward(gpu, v, s, x, w, b, y, relu, Some(packer))
}

#[allow(clippy::too_many_arguments)]
fn forward(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
    relu: bool,
    packer: Option<&mut WeightPacker>,
) -> Result<Vec<Dispatch>> {
    let v = s.resolve(gpu, v, Pass::Forward)?;
    let mut desc = s.describe();
    if relu {
        desc.push_str(" +relu");
    }
    let mut p = s.params()?;
    p.floor = relu_floor(relu);
    check_len("conv2d_forward", &desc, x, s.input_len())?;
    check_len("conv2d_forward", &desc, w, s.weight_len())?;
    check_len("conv2d_forward", &desc, b, s.co)?;
    check_len("conv2d_forward", &desc, y, s.output_len())?;
    let (entry, groups) = match v {
        Variant::Generic => {
            let threads = s.n * s.co.div_ceil(BLOCK) * s.oh() * s.ow().div_ceil(BLOCK);
            ("conv2d_forward", gpu.caps.grid(threads, WG))
        }
        Variant::Tiled => (
            "conv2d_forward_tiled",
            pixel_tiles(&gpu.caps, s.n * s.oh() * s.ow(), s.co),
        ),
        _ => {
            let q = Params3 {
                n: p.n,
                ic: p.ci,
                ih: p.h,
                iw: p.w,
                oc: p.co,
                oh: p.oh,
                ow: p.ow,
                pad: p.pad,
                oc_pad: oc_pad(s.co, v)?,
                has_bias: 1,
                flip: 0,
                chunk: 1,
                floor: relu_floor(relu),
                bias_column: 0,
                _pad: [0; 2],
            };
            let subgroup = v == Variant::Subgroup;
            let label = "conv2d forward";
            return conv3x3(gpu, q, &desc, label, w, b, x, y, subgroup, packer);
        }
    };
    let p = gpu.uniform("conv2d params", &p);
    let binds: [(u32, &dyn Bindable); _] = [
        (binding::P, &p),
        (binding::X, &x),
        (binding::WT, &w),
        (binding::BIAS, &b),
        (binding::Y, &y),
    ];
    Ok(vec![gpu
        .dispatch(shader(v), entry, &desc, &binds, groups)?
        .with_cost(s.flops(), s.bytes())])
}

/// dx = conv_transpose(dy, w) (overwrites dx).
pub fn conv2d_backward_input(
    gpu: &Gpu,
    s: Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_backward_input_with(gpu, Variant::Auto, s, dy, w, dx)
}

pub fn conv2d_backward_input_with(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<Vec<Dispatch>> {
    backward_input(gpu, v, s, dy, w, dx, None)
}

/// `conv2d_backward_input_with` whose 3x3 paths leave packing the flipped weights to
/// `packer`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input_packed(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    packer: &mut WeightPacker,
) -> Result<Vec<Dispatch>> {
    backward_input(gpu, v, s, dy, w, dx, Some(packer))
}

fn backward_input(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    packer: Option<&mut WeightPacker>,
) -> Result<Vec<Dispatch>> {
    let v = s.resolve(gpu, v, Pass::InputGradient)?;
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_input", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_input", &desc, w, s.weight_len())?;
    check_len("conv2d_backward_input", &desc, dx, s.input_len())?;
    let (entry, groups) = match v {
        Variant::Generic => {
            let threads = s.n * s.ci.div_ceil(BLOCK) * s.h * s.w.div_ceil(BLOCK);
            ("conv2d_backward_input", gpu.caps.grid(threads, WG))
        }
        Variant::Tiled => (
            "conv2d_backward_input_tiled",
            pixel_tiles(&gpu.caps, s.n * s.h * s.w, s.ci),
        ),
        _ => {
            // A stride-1 convolution of dy with the mirrored weights and padding 2 - pad,
            // from CO channels to CI channels.
            let q = Params3 {
                n: p.n,
                ic: p.co,
                ih: p.oh,
                iw: p.ow,
                oc: p.ci,
                oh: p.h,
                ow: p.w,
                pad: 2 - p.pad,
                oc_pad: oc_pad(s.ci, v)?,
                has_bias: 0,
                flip: 1,
                chunk: 1,
                floor: f32::NEG_INFINITY,
                bias_column: 0,
                _pad: [0; 2],
            };
            let no_bias = gpu.zeros("no bias", 1)?;
            let subgroup = v == Variant::Subgroup;
            let label = "conv2d backward input";
            return conv3x3(gpu, q, &desc, label, w, &no_bias, dy, dx, subgroup, packer);
        }
    };
    let p = gpu.uniform("conv2d params", &p);
    let binds: [(u32, &dyn Bindable); _] = [
        (binding::P, &p),
        (binding::WT, &w),
        (binding::DY, &dy),
        (binding::DX, &dx),
    ];
    Ok(vec![gpu
        .dispatch(shader(v), entry, &desc, &binds, groups)?
        .with_cost(s.flops(), s.bytes())])
}

/// What the forward's output is clamped below at: 0 with a fused ReLU, else nothing.
fn relu_floor(relu: bool) -> f32 {
    if relu {
        0.0
    } else {
        f32::NEG_INFINITY
    }
}

/// The WGSL file of the generic and tiled entry points.
fn shader(v: Variant) -> &'static Shader {
    if v == Variant::Tiled {
        &CONV2D_TILED
    } else {
        &CONV2D
    }
}

/// Workgroups for the tiled forward and input gradient, whose columns are pixels (n x H x
/// W, past 65,535 tiles at vgg's eval batches on a GPU with 2 GiB bindings): the column
/// tiles along x and, past the device's limit, continued along z.
fn pixel_tiles(caps: &select::Caps, pixels: usize, rows: usize) -> [u32; 3] {
    let limit = caps.max_workgroups.max(1) as usize;
    let columns = pixels.div_ceil(64).max(1);
    let z = columns.div_ceil(limit);
    let x = columns.div_ceil(z);
    let y = rows.div_ceil(64);
    [
        x as u32,
        y.min(u32::MAX as usize) as u32,
        z.min(u32::MAX as usize) as u32,
    ]
}
