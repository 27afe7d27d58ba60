//! The `tiled` variant's passes (`shaders/batchnorm_planes.wgsl`): one workgroup per
//! (image, channel) plane, the per-channel sums in two levels through a scratch of 2·N·C
//! plane sums. Same tensors and results (within rounding) as the per-channel passes.

use super::{binding, BatchNormShape, BatchNormTensors, Params};
use crate::gpu::{Bindable, Dispatch, Gpu, Result, Tensor, BATCHNORM_PLANES};

const WG: u32 = 64;

/// One workgroup per plane (continued along y past the device's per-dimension limit).
fn planes(gpu: &Gpu, s: &BatchNormShape) -> [u32; 3] {
    let limit = gpu.caps.max_workgroups.max(1) as usize;
    let n = s.n * s.c;
    let y = n.div_ceil(limit);
    [n.div_ceil(y) as u32, y as u32, 1]
}

fn scratch(gpu: &Gpu, s: &BatchNormShape) -> Result<Tensor> {
    gpu.zeros("batchnorm plane sums", 2 * s.n * s.c)
}

fn dispatch(
    gpu: &Gpu,
    entry: &str,
    s: &BatchNormShape,
    binds: &[(u32, &dyn Bindable)],
    groups: [u32; 3],
) -> Result<Dispatch> {
    gpu.dispatch(&BATCHNORM_PLANES, entry, &s.describe(), binds, groups)
}

/// The plane sums of the statistics, then their per-channel combine.
pub(super) fn stats(
    gpu: &Gpu,
    s: &BatchNormShape,
    p: &Params,
    t: &BatchNormTensors,
    x: &Tensor,
) -> Result<[Dispatch; 2]> {
    let (p, sums) = (gpu.uniform("batchnorm params", p), scratch(gpu, s)?);
    let binds: [(u32, &dyn Bindable); 3] = [
        (binding::P, &p),
        (binding::X, &x),
        (binding::PLANE_SUMS, &sums),
    ];
    let level1 = dispatch(gpu, "batchnorm_plane_stats", s, &binds, planes(gpu, s))?;
    let level2 = dispatch(
        gpu,
        "batchnorm_stats_combine",
        s,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::PLANE_SUMS, &sums),
            (binding::SAVE_STATS, &t.save_stats),
            (binding::RUNNING_MEAN, &t.running_mean),
            (binding::RUNNING_VAR, &t.running_var),
        ],
        gpu.caps.grid(s.c, WG),
    )?;
    let len = s.len() as f64;
    Ok([
        level1.with_cost(4.0 * len, 4.0 * len),
        level2.with_cost(2.0 * (s.n * s.c) as f64, 8.0 * (s.n * s.c) as f64),
    ])
}

/// y from x with the batch statistics (`eval`: the running ones).
pub(super) fn normalize(
    gpu: &Gpu,
    s: &BatchNormShape,
    p: &Params,
    t: &BatchNormTensors,
    x: &Tensor,
    y: &Tensor,
    eval: bool,
) -> Result<Dispatch> {
    let p = gpu.uniform("batchnorm params", p);
    let mut binds: Vec<(u32, &dyn Bindable)> = vec![
        (binding::P, &p),
        (binding::X, &x),
        (binding::Y, &y),
        (binding::GAMMA, &t.gamma),
        (binding::BETA, &t.beta),
    ];
    let entry = if eval {
        binds.push((binding::RUNNING_MEAN, &t.running_mean));
        binds.push((binding::RUNNING_VAR, &t.running_var));
        "batchnorm_forward_eval_planes"
    } else {
        binds.push((binding::SAVE_STATS, &t.save_stats));
        "batchnorm_forward_train_planes"
    };
    let len = s.len() as f64;
    Ok(dispatch(gpu, entry, s, &binds, planes(gpu, s))?.with_cost(3.0 * len, 8.0 * len))
}

/// The backward's plane sums, then dx (and dgamma, dbeta) from their per-channel combine.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    gpu: &Gpu,
    s: &BatchNormShape,
    p: &Params,
    t: &BatchNormTensors,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<[Dispatch; 2]> {
    let (p, sums) = (gpu.uniform("batchnorm params", p), scratch(gpu, s)?);
    let level1 = dispatch(
        gpu,
        "batchnorm_backward_plane_sums",
        s,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::SAVE_STATS, &t.save_stats),
            (binding::DY, &dy),
            (binding::PLANE_SUMS, &sums),
        ],
        planes(gpu, s),
    )?;
    let input = dispatch(
        gpu,
        "batchnorm_backward_planes",
        s,
        &[
            (binding::P, &p),
            (binding::X, &x),
            (binding::GAMMA, &t.gamma),
            (binding::SAVE_STATS, &t.save_stats),
            (binding::DY, &dy),
            (binding::DX, &dx),
            (binding::DGAMMA, &dgamma),
            (binding::DBETA, &dbeta),
            (binding::PLANE_SUMS, &sums),
        ],
        planes(gpu, s),
    )?;
    let len = s.len() as f64;
    Ok([
        level1.with_cost(5.0 * len, 8.0 * len),
        input.with_cost(7.0 * len, 12.0 * len),
    ])
}
