//! The backward of a tiling pool with the layer before it fused: a convolution's bias
//! gradient, or a batch norm's whole backward (see shaders/pool.wgsl).

use super::{binding, resolve, Pass, PoolFusion, PoolShape, WG};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, POOL};
use crate::kernels::batchnorm::BatchNormTensors;
use crate::kernels::check_len;
use crate::kernels::select::Variant;

/// The backward of a tiling pool (stride == k) whose input is a convolution's output (ReLU
/// and dropout between them fused into the pool): `dx` as `maxpool_backward` writes it, and
/// the convolution's bias gradient `db` (the sum of `dx` over each channel) from per-row
/// sums the backward keeps as it writes (`row_sums`: `s.rows()` floats of scratch), so no
/// pass reads `dx` again for it. Both outputs are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn maxpool_backward_conv_bias(
    gpu: &Gpu,
    s: PoolShape,
    fusion: PoolFusion,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
    row_sums: &Tensor,
    db: &Tensor,
) -> Result<[Dispatch; 2]> {
    maxpool_backward_conv_bias_with(gpu, Variant::Auto, s, fusion, dy, argmax, dx, row_sums, db)
}

/// `maxpool_backward_conv_bias` with variant `v`: `Generic` one invocation per output row
/// (a sum per row), `Tiled` one workgroup per plane (a sum per plane).
#[allow(clippy::too_many_arguments)]
pub fn maxpool_backward_conv_bias_with(
    gpu: &Gpu,
    v: Variant,
    s: PoolShape,
    fusion: PoolFusion,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
    row_sums: &Tensor,
    db: &Tensor,
) -> Result<[Dispatch; 2]> {
    let desc = s.describe();
    let mut p = s.params(&fusion)?;
    let tiled = resolve(gpu, v, &s, Pass::BackwardConvBias)? == Variant::Tiled;
    p.sums_per_plane = if tiled { 1 } else { p.oh };
    if s.k != s.stride {
        return Err(GpuError::Shape {
            label: "maxpool".into(),
            message: format!("the fused bias gradient needs tiling windows, not {desc}"),
        });
    }
    check_len("maxpool_backward_conv_bias", &desc, dy, s.output_len())?;
    check_len("maxpool_backward_conv_bias", &desc, argmax, s.output_len())?;
    check_len("maxpool_backward_conv_bias", &desc, dx, s.input_len())?;
    check_len("maxpool_backward_conv_bias", &desc, row_sums, s.rows())?;
    check_len("maxpool_backward_conv_bias", &desc, db, s.c)?;
    let p = gpu.uniform("maxpool params", &p);
    let (entry, groups) = match tiled {
        true => ("maxpool_backward_plane_sums", gpu.caps.grid(s.n * s.c, 1)),
        false => ("maxpool_backward_tiled_sums", gpu.caps.grid(s.rows(), WG)),
    };
    let backward = gpu
        .dispatch(
            &POOL,
            entry,
            &desc,
            &[
                (binding::P, &p),
                (binding::ARGMAX, &argmax),
                (binding::DY, &dy),
                (binding::DX1, &dx),
                (binding::ROW_SUMS, &row_sums),
            ],
            groups,
        )?
        .with_cost(0.0, s.cost());
    let reduce = gpu.dispatch(
        &POOL,
        "maxpool_conv_bias_reduce",
        &desc,
        &[
            (binding::P, &p),
            (binding::ROW_SUMS, &row_sums),
            (binding::CONV_DB, &db),
        ],
        gpu.caps.grid(s.c, WG),
    )?;
    Ok([backward, reduce])
}

/// The backward of a tiling pool (stride == k) with a fused batch norm, through to the
/// batch norm's input: dgamma and dbeta, then dx (see shaders/pool.wgsl). Same results as
/// `maxpool_backward` then `batchnorm::batchnorm_backward` without their intermediate
/// tensor. `x` is the batch norm's input; all three outputs are overwritten. `relu_input`
/// as in `batchnorm_backward`: x came from a fused ReLU, whose backward is applied to dx.
#[allow(clippy::too_many_arguments)]
pub fn maxpool_backward_batchnorm(
    gpu: &Gpu,
    s: PoolShape,
    fusion: PoolFusion,
    t: &BatchNormTensors,
    x: &Tensor,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    relu_input: bool,
) -> Result<[Dispatch; 2]> {
    let v = Variant::Auto;
    maxpool_backward_batchnorm_with(
        gpu, v, s, fusion, t, x, dy, argmax, dx, dgamma, dbeta, relu_input,
    )
}

/// `maxpool_backward_batchnorm` with variant `v`: `Generic` one workgroup per channel for
/// the sums, then one invocation per output row; `Tiled` one workgroup per plane for both
/// (two-level sums, see shaders/pool.wgsl).
#[allow(clippy::too_many_arguments)]
pub fn maxpool_backward_batchnorm_with(
    gpu: &Gpu,
    v: Variant,
    s: PoolShape,
    fusion: PoolFusion,
    t: &BatchNormTensors,
    x: &Tensor,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    relu_input: bool,
) -> Result<[Dispatch; 2]> {
    let desc = s.describe();
    let tiled = resolve(gpu, v, &s, Pass::BackwardBatchNorm)? == Variant::Tiled;
    let mut p = s.params(&fusion)?;
    p.mask_below = crate::kernels::batchnorm::mask_below(relu_input);
    if s.k != s.stride {
        return Err(GpuError::Shape {
            label: "maxpool".into(),
            message: format!("the fused batch-norm backward needs tiling windows, not {desc}"),
        });
    }
    check_len("maxpool_backward_batchnorm", &desc, dy, s.output_len())?;
    check_len("maxpool_backward_batchnorm", &desc, argmax, s.output_len())?;
    for v in [x, dx] {
        check_len("maxpool_backward_batchnorm", &desc, v, s.input_len())?;
    }
    for v in [t.gamma, dgamma, dbeta] {
        check_len("maxpool_backward_batchnorm", &desc, v, s.c)?;
    }
    check_len("maxpool_backward_batchnorm", &desc, t.save_stats, 2 * s.c)?;
    let p = gpu.uniform("maxpool params", &p);
    let sums_cost = (4.0 * s.output_len() as f64, 12.0 * s.output_len() as f64);
    let dx_cost = (
        5.0 * s.input_len() as f64,
        4.0 * (2 * s.input_len() + 2 * s.output_len()) as f64,
    );
    if tiled {
        // Each plane's two sums, then the channels' from them in image order.
        // The planes' sums, then gamma (see shaders/pool.wgsl).
        let sums = gpu.zeros("maxpool batch-norm plane sums", 2 * s.n * s.c + s.c)?;
        let planes = gpu.caps.grid(s.n * s.c, 1);
        let reduce = gpu.dispatch(
            &POOL,
            "maxpool_backward_batchnorm_plane_sums",
            &desc,
            &[
                (binding::P, &p),
                (binding::X, &x),
                (binding::ARGMAX, &argmax),
                (binding::DY, &dy),
                (binding::SAVE_STATS, &t.save_stats),
                (binding::GAMMA, &t.gamma),
                (binding::ROW_SUMS, &sums),
            ],
            planes,
        )?;
        let input = gpu.dispatch(
            &POOL,
            "maxpool_backward_batchnorm_planes",
            &desc,
            &[
                (binding::P, &p),
                (binding::X, &x),
                (binding::ARGMAX, &argmax),
                (binding::DY, &dy),
                (binding::DX1, &dx),
                (binding::SAVE_STATS, &t.save_stats),
                (binding::DGAMMA, &dgamma),
                (binding::DBETA, &dbeta),
                (binding::ROW_SUMS, &sums),
            ],
            planes,
        )?;
        return Ok([
            reduce.with_cost(sums_cost.0, sums_cost.1),
            input.with_cost(dx_cost.0, dx_cost.1),
        ]);
    }
    let reduce = gpu.dispatch(
        &POOL,
        "maxpool_backward_batchnorm_reduce",
        &desc,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::ARGMAX, &argmax),
            (binding::DY, &dy),
            (binding::SAVE_STATS, &t.save_stats),
            (binding::DGAMMA, &dgamma),
            (binding::DBETA, &dbeta),
        ],
        [s.c as u32, 1, 1],
    )?;
    let input = gpu.dispatch(
        &POOL,
        "maxpool_backward_batchnorm",
        &desc,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::ARGMAX, &argmax),
            (binding::DY, &dy),
            (binding::DX1, &dx),
            (binding::GAMMA, &t.gamma),
            (binding::SAVE_STATS, &t.save_stats),
            (binding::DGAMMA, &dgamma),
            (binding::DBETA, &dbeta),
        ],
        gpu.caps.grid(s.rows(), WG),
    )?;
    Ok([
        reduce.with_cost(sums_cost.0, sums_cost.1),
        input.with_cost(dx_cost.0, dx_cost.1),
    ])
}
