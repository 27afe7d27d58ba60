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

mod reference;
mod shape;

use super::{check_len, dim, select};
use crate::gpu::{
    Bindable, Dispatch, Gpu, Result, Shader, Tensor, CONV2D, CONV2D_SUBGROUP, CONV2D_TILED,
};
use bytemuck::{Pod, Zeroable};
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
}

const WG: u32 = 64;
const BLOCK: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params3 {
    n: u32,
    ic: u32,
    ih: u32,
    iw: u32,
    oc: u32,
    oh: u32,
    ow: u32,
    pad: u32,
    oc_pad: u32,
    has_bias: u32,
    flip: u32,
    chunk: u32,
}

fn pad_to(v: usize, multiple: usize) -> usize {
    v.div_ceil(multiple) * multiple
}

/// Output channels the 3x3 kernels' packed weights are padded to: 8 per invocation for
/// the plain kernel, 32 per subgroup for the subgroup one.
fn oc_pad(oc: usize, v: Variant) -> Result<u32> {
    let multiple = if v == Variant::Subgroup { 32 } else { 8 };
    dim("conv2d", pad_to(oc, multiple))
}

/// The packed-weight dispatch and the register-blocked 3x3 convolution over it.
#[allow(clippy::too_many_arguments)]
fn conv3x3(
    gpu: &Gpu,
    q: Params3,
    desc: &str,
    entry_label: &str,
    w: &Tensor,
    bias: &Tensor,
    src: &Tensor,
    dst: &Tensor,
    subgroup: bool,
) -> Result<Vec<Dispatch>> {
    let packed = gpu.zeros(
        &format!("{entry_label} packed weights"),
        (q.ic * 9 * q.oc_pad) as usize,
    )?;
    let qb = gpu.uniform("conv2d 3x3 params", &q);
    let pack = gpu.dispatch(
        &CONV2D,
        "conv2d_pack_weights",
        desc,
        &[
            (binding::Q, &qb),
            (binding::WT, &w),
            (binding::PACKED_OUT, &packed),
        ],
        gpu.caps.grid((q.ic * 9 * q.oc_pad) as usize, WG),
    )?;
    let flops = 2.0 * (q.n * q.oc * q.oh * q.ow) as f64 * (q.ic * 9) as f64;
    let bytes =
        4.0 * ((q.n * q.ic * q.ih * q.iw) + (q.n * q.oc * q.oh * q.ow) + q.ic * 9 * q.oc) as f64;
    let (shader, entry, groups) = if subgroup {
        // Blocks of 32 output channels along y; 4 columns of 2 rows per invocation, the
        // items spread over x and z (the kernel rebuilds the item from both).
        let items = (q.n * q.oh.div_ceil(4) * q.ow.div_ceil(4)) as usize;
        let [x, z, _] = gpu.caps.grid(items, WG);
        (
            &CONV2D_SUBGROUP,
            "conv2d_forward_3x3_subgroup",
            [x, q.oc_pad / 32, z],
        )
    } else {
        let threads = (q.n * q.oc_pad / 8 * q.oh * q.ow.div_ceil(8)) as usize;
        (&CONV2D, "conv2d_forward_3x3", gpu.caps.grid(threads, WG))
    };
    let conv = gpu
        .dispatch(
            shader,
            entry,
            desc,
            &[
                (binding::Q, &qb),
                (binding::PACKED, &packed),
                (binding::SRC, &src),
                (binding::DST, &dst),
                (binding::BIAS, &bias),
            ],
            groups,
        )?
        .with_cost(flops, bytes);
    Ok(vec![pack, conv])
}

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
    let v = s.resolve(gpu, v, Pass::Forward)?;
    let desc = s.describe();
    let p = s.params()?;
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
            };
            let subgroup = v == Variant::Subgroup;
            return conv3x3(gpu, q, &desc, "conv2d forward", w, b, x, y, subgroup);
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
            };
            let no_bias = gpu.zeros("no bias", 1)?;
            let subgroup = v == Variant::Subgroup;
            let label = "conv2d backward input";
            return conv3x3(gpu, q, &desc, label, w, &no_bias, dy, dx, subgroup);
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

/// dw = correlation of x with dy over the batch (overwrites dw).
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    s: Conv2dShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_backward_weight_with(gpu, Variant::Auto, s, dy, x, dw)
}

pub fn conv2d_backward_weight_with(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
) -> Result<Vec<Dispatch>> {
    let v = s.resolve(gpu, v, Pass::WeightGradient)?;
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_weight", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_weight", &desc, x, s.input_len())?;
    check_len("conv2d_backward_weight", &desc, dw, s.weight_len())?;
    let pb = gpu.uniform("conv2d params", &p);
    if v == Variant::Generic {
        let threads = s.co.div_ceil(BLOCK) * s.ci * s.kh * s.kw;
        let binds: [(u32, &dyn Bindable); _] = [
            (binding::P, &pb),
            (binding::X, &x),
            (binding::DY, &dy),
            (binding::DW, &dw),
        ];
        return Ok(vec![gpu
            .dispatch(
                &CONV2D,
                "conv2d_backward_weight",
                &desc,
                &binds,
                gpu.caps.grid(threads, WG),
            )?
            .with_cost(s.flops(), s.bytes())]);
    }
    // The other kernels split the batch, the long sum, into chunks so there is enough
    // parallel work (a conv with few channels has few (co, ci) blocks), write one partial
    // sum per chunk and add them in chunk order (deterministic). Units of work per chunk
    // and how many are wanted in all: subgroups, invocations or workgroups.
    let tiled = match v {
        Variant::Tiled => tiles(s.ci * s.kh * s.kw, s.co),
        _ => [1, 1, 1],
    };
    let (units, wanted): (usize, usize) = match v {
        Variant::Subgroup => (s.co.div_ceil(32) * s.ci.div_ceil(8), 64),
        Variant::Tiled => ((tiled[0] * tiled[1]) as usize, 256),
        _ => (s.co.div_ceil(4) * s.ci, 2048),
    };
    let chunks = wanted.div_ceil(units).clamp(1, s.n);
    let chunk = s.n.div_ceil(chunks);
    let chunks = s.n.div_ceil(chunk);
    let q = Params3 {
        n: p.n,
        ic: p.ci,
        ih: p.h,
        iw: p.w,
        oc: p.co,
        oh: p.oh,
        ow: p.ow,
        pad: p.pad,
        chunk: dim("conv2d", chunk)?,
        ..Params3::zeroed()
    };
    let qb = gpu.uniform("conv2d chunk params", &q);
    let partials = gpu.zeros(
        "conv2d weight-gradient partial sums",
        chunks * s.weight_len(),
    )?;
    let (shader, entry, x_binding, groups) = match v {
        // 8 subgroups of 8 per workgroup.
        Variant::Subgroup => (
            &CONV2D_SUBGROUP,
            "conv2d_backward_weight_3x3_subgroup",
            binding::SRC,
            gpu.caps.grid(chunks * units, 8),
        ),
        Variant::Tiled => (
            &CONV2D_TILED,
            "conv2d_backward_weight_tiled",
            binding::X,
            [tiled[0], tiled[1], chunks as u32],
        ),
        _ => (
            &CONV2D,
            "conv2d_backward_weight_3x3",
            binding::X,
            gpu.caps.grid(chunks * units, WG),
        ),
    };
    let mut binds: Vec<(u32, &dyn Bindable)> = vec![
        (binding::Q, &qb),
        (x_binding, &x),
        (binding::DY, &dy),
        (binding::PARTIALS, &partials),
    ];
    if v != Variant::Subgroup {
        binds.push((binding::P, &pb)); // the subgroup kernel reads its shape from q alone
    }
    let sums = gpu
        .dispatch(shader, entry, &desc, &binds, groups)?
        .with_cost(s.flops(), s.bytes());
    let reduce = gpu.dispatch(
        &CONV2D,
        "conv2d_reduce_partials",
        &desc,
        &[
            (binding::P, &pb),
            (binding::Q, &qb),
            (binding::PARTIALS, &partials),
            (binding::DW, &dw),
        ],
        gpu.caps.grid(s.weight_len(), WG),
    )?;
    Ok(vec![sums, reduce])
}

/// The WGSL file of the generic and tiled entry points.
fn shader(v: Variant) -> &'static Shader {
    if v == Variant::Tiled {
        &CONV2D_TILED
    } else {
        &CONV2D
    }
}

/// Workgroups for the tiled weight gradient: 64 columns of the implicit product along x,
/// 64 rows along y (the dispatch checks them against the device's limit; z is its batch
/// chunks).
fn tiles(columns: usize, rows: usize) -> [u32; 3] {
    let groups = |v: usize| v.div_ceil(64).min(u32::MAX as usize) as u32;
    [groups(columns), groups(rows), 1]
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

/// db = sum of dy over batch and space (overwrites db).
pub fn conv2d_backward_bias(
    gpu: &Gpu,
    s: Conv2dShape,
    dy: &Tensor,
    db: &Tensor,
) -> Result<Dispatch> {
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_bias", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_bias", &desc, db, s.co)?;
    let p = gpu.uniform("conv2d params", &p);
    // Planes of whole vec4s read dy as vec4s.
    let (entry, dy_binding) = if select::conv2d::bias_vec4(&gpu.caps, &s) {
        ("conv2d_backward_bias4", binding::DY4)
    } else {
        ("conv2d_backward_bias", binding::DY)
    };
    gpu.dispatch(
        &CONV2D,
        entry,
        &desc,
        &[(binding::P, &p), (dy_binding, &dy), (binding::DB, &db)],
        [s.co as u32, 1, 1],
    )
    .map(|d| d.with_cost(s.output_len() as f64, 4.0 * s.output_len() as f64))
}
