//! The weight and bias gradients of a convolution: per-chunk partial sums over the batch
//! then a fixed-order combine, with the bias gradient in the combine's dispatch.

use super::{binding, check_len, dim, select, Conv2dShape, Params3, Pass, Variant, BLOCK, WG};
use crate::gpu::{Bindable, Dispatch, Gpu, Result, Tensor, CONV2D, CONV2D_SUBGROUP, CONV2D_TILED};
use bytemuck::Zeroable;

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
    weight_gradient(gpu, v, s, dy, x, dw, None)
}

/// dw and db = the sum of dy over batch and space (both overwritten): where the weight
/// gradient ends in a combine of partial sums, db's workgroups ride in that dispatch.
pub fn conv2d_backward_weight_bias(
    gpu: &Gpu,
    s: Conv2dShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    db: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_backward_weight_bias_with(gpu, Variant::Auto, s, dy, x, dw, db)
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_bias_with(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    db: &Tensor,
) -> Result<Vec<Dispatch>> {
    weight_gradient(gpu, v, s, dy, x, dw, Some(db))
}

#[allow(clippy::too_many_arguments)]
fn weight_gradient(
    gpu: &Gpu,
    v: Variant,
    s: Conv2dShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let v = s.resolve(gpu, v, Pass::WeightGradient)?;
    let desc = s.describe();
    let p = s.params()?;
    check_len("conv2d_backward_weight", &desc, dy, s.output_len())?;
    check_len("conv2d_backward_weight", &desc, x, s.input_len())?;
    check_len("conv2d_backward_weight", &desc, dw, s.weight_len())?;
    let pb = gpu.uniform("conv2d params", &p);
    if let Some(db) = db {
        check_len("conv2d_backward_bias", &desc, db, s.co)?;
    }
    if v == Variant::Generic {
        let threads = s.co.div_ceil(BLOCK) * s.ci * s.kh * s.kw;
        let binds: [(u32, &dyn Bindable); _] = [
            (binding::P, &pb),
            (binding::X, &x),
            (binding::DY, &dy),
            (binding::DW, &dw),
        ];
        let bias = db
            .map(|db| conv2d_backward_bias(gpu, s, dy, db))
            .transpose()?;
        return Ok([gpu
            .dispatch(
                &CONV2D,
                "conv2d_backward_weight",
                &desc,
                &binds,
                gpu.caps.grid(threads, WG),
            )?
            .with_cost(s.flops(), s.bytes())]
        .into_iter()
        .chain(bias)
        .collect());
    }
    // The other kernels split the batch, the long sum, into chunks so there is enough
    // parallel work (a conv with few channels has few (co, ci) blocks), write one partial
    // sum per chunk and add them in chunk order (deterministic). Units of work per chunk
    // and how many are wanted in all: subgroups, invocations or workgroups.
    // The tiled kernel computes the bias gradient as one more column of its product (the
    // batch chunks are sized without it, so dw is the same bits either way).
    let bias_column = v == Variant::Tiled && db.is_some();
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
        floor: f32::NEG_INFINITY,
        bias_column: bias_column as u32,
        ..Params3::zeroed()
    };
    let qb = gpu.uniform("conv2d chunk params", &q);
    let partials = gpu.zeros(
        "conv2d weight-gradient partial sums",
        chunks * (s.weight_len() + if bias_column { s.co } else { 0 }),
    )?;
    let (shader, entry, x_binding, groups) = match v {
        // 8 subgroups of 8 per workgroup.
        Variant::Subgroup => (
            &CONV2D_SUBGROUP,
            "conv2d_backward_weight_3x3_subgroup",
            binding::SRC,
            gpu.caps.grid(chunks * units, 8),
        ),
        Variant::Tiled => {
            let [x, y, _] = tiles(s.ci * s.kh * s.kw + bias_column as usize, s.co);
            let entry = "conv2d_backward_weight_tiled";
            (&CONV2D_TILED, entry, binding::X, [x, y, chunks as u32])
        }
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
    // The bias gradient's workgroups (one per output channel) follow the combine's rows.
    let mut groups = gpu.caps.grid(s.weight_len(), WG);
    let mut q = q;
    let (entry, dy_binding) = match db {
        None => ("conv2d_reduce_partials", binding::DY),
        Some(_) if bias_column => {
            groups = gpu.caps.grid(s.weight_len() + s.co, WG);
            ("conv2d_reduce_partials_bias_column", binding::DY)
        }
        Some(_) => {
            q.has_bias = groups[1];
            groups[1] += s.co.div_ceil(groups[0] as usize) as u32;
            if select::conv2d::bias_vec4(&gpu.caps, &s) {
                ("conv2d_reduce_partials_bias4", binding::DY4)
            } else {
                ("conv2d_reduce_partials_bias", binding::DY)
            }
        }
    };
    let qb = gpu.uniform("conv2d combine params", &q);
    let mut binds: Vec<(u32, &dyn Bindable)> = vec![
        (binding::P, &pb),
        (binding::Q, &qb),
        (binding::PARTIALS, &partials),
        (binding::DW, &dw),
    ];
    if let Some(db) = db {
        binds.push((binding::DB, db));
        if !bias_column {
            binds.push((dy_binding, dy));
        }
    }
    let reduce = gpu.dispatch(&CONV2D, entry, &desc, &binds, groups)?;
    Ok(vec![sums, reduce])
}

/// Workgroups for the tiled weight gradient: 64 columns of the implicit product along x,
/// 64 rows along y (the dispatch checks them against the device's limit; z is its batch
/// chunks).
fn tiles(columns: usize, rows: usize) -> [u32; 3] {
    let groups = |v: usize| v.div_ceil(64).min(u32::MAX as usize) as u32;
    [groups(columns), groups(rows), 1]
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
