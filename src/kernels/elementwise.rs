//! ReLU forward and backward, and the averaging of two views' logits for test-time
//! augmentation (`shaders/elementwise.wgsl`).

use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, Result, Tensor, ELEMENTWISE};
use bytemuck::{Pod, Zeroable};

/// Binding numbers of elementwise.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const X: u32 = 1;
    pub const Y: u32 = 2;
    pub const DY: u32 = 3;
    pub const DX: u32 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

const WG: u32 = 256;

/// y = max(x, 0) over `n` elements.
pub fn relu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor, n: usize) -> Result<Dispatch> {
    let shape = format!("[{n}]");
    check_len("relu_forward", &shape, x, n)?;
    check_len("relu_forward", &shape, y, n)?;
    let params = gpu.uniform(
        "relu params",
        &Params {
            n: dim("relu", n)?,
            _pad: [0; 3],
        },
    );
    gpu.dispatch(
        &ELEMENTWISE,
        "relu_forward",
        &shape,
        &[(binding::P, &params), (binding::X, &x), (binding::Y, &y)],
        gpu.caps.grid(n.div_ceil(4), WG),
    )
    .map(|d| d.with_cost(n as f64, 8.0 * n as f64))
}

/// dx = dy where x > 0, else 0.
pub fn relu_backward(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    n: usize,
) -> Result<Dispatch> {
    let shape = format!("[{n}]");
    for t in [x, dy, dx] {
        check_len("relu_backward", &shape, t, n)?;
    }
    let params = gpu.uniform(
        "relu params",
        &Params {
            n: dim("relu", n)?,
            _pad: [0; 3],
        },
    );
    gpu.dispatch(
        &ELEMENTWISE,
        "relu_backward",
        &shape,
        &[
            (binding::P, &params),
            (binding::X, &x),
            (binding::DY, &dy),
            (binding::DX, &dx),
        ],
        gpu.caps.grid(n.div_ceil(4), WG),
    )
    .map(|d| d.with_cost(n as f64, 12.0 * n as f64))
}

/// `entry` (copy: y = x; average_into: y = (y + x) / 2) over `n` elements.
fn two_tensor(gpu: &Gpu, entry: &str, x: &Tensor, y: &Tensor, n: usize) -> Result<Dispatch> {
    let shape = format!("[{n}]");
    check_len(entry, &shape, x, n)?;
    check_len(entry, &shape, y, n)?;
    let params = gpu.uniform(
        "elementwise params",
        &Params {
            n: dim(entry, n)?,
            _pad: [0; 3],
        },
    );
    gpu.dispatch(
        &ELEMENTWISE,
        entry,
        &shape,
        &[(binding::P, &params), (binding::X, &x), (binding::Y, &y)],
        gpu.caps.grid(n.div_ceil(4), WG),
    )
    .map(|d| d.with_cost(n as f64, 12.0 * n as f64))
}

/// y = x over `n` elements.
pub fn copy(gpu: &Gpu, x: &Tensor, y: &Tensor, n: usize) -> Result<Dispatch> {
    two_tensor(gpu, "copy", x, y, n)
}

/// y = (y + x) / 2 over `n` elements (the mean of two views' logits).
pub fn average_into(gpu: &Gpu, x: &Tensor, y: &Tensor, n: usize) -> Result<Dispatch> {
    two_tensor(gpu, "average_into", x, y, n)
}

/// CPU reference of `average_into`.
pub fn average_into_reference(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = (*y + x) * 0.5;
    }
}

pub fn relu_forward_reference(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.max(0.0);
    }
}

pub fn relu_backward_reference(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    for ((o, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
        *o = if v > 0.0 { g } else { 0.0 };
    }
}
