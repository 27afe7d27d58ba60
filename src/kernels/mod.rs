//! One module per kernel family: the dispatch wrappers for `shaders/<family>.wgsl` and,
//! beside them, plain-Rust `*_reference` functions with the same inputs and outputs
//! (llm.c order: outputs, inputs, shape integers). Tests compare the two.
//!
//! Wrappers check every tensor's length against the shape they are given, so a mismatch is
//! an error naming the kernel, the tensor and the shape rather than a GPU validation error
//! or silent out-of-bounds reads.

pub mod augment;
pub mod batchnorm;
pub mod conv2d;
pub mod conv2d_pool;
pub mod data;
pub mod dropout;
pub mod elementwise;
pub mod matmul;
pub mod optim;
pub mod pool;
pub mod select;
pub mod softmax_xent;
pub mod tune;

use crate::gpu::{GpuError, Result, Tensor};

/// Errors unless `t` holds at least `expected` elements. Longer is allowed: a plan for a
/// smaller (last, partial) batch reuses the buffers of the full batch.
pub(crate) fn check_len(kernel: &str, shape: &str, t: &Tensor, expected: usize) -> Result<()> {
    if t.len < expected {
        return Err(GpuError::Shape {
            label: t.label.clone(),
            message: format!(
                "{kernel} with shape {shape} needs {expected} elements, the tensor has {}",
                t.len
            ),
        });
    }
    Ok(())
}

/// A shape dimension as the u32 the shaders index with.
pub(crate) fn dim(kernel: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| GpuError::Shape {
        label: kernel.to_string(),
        message: format!("dimension {v} does not fit the 32-bit indices the kernels use"),
    })
}
