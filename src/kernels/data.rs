//! Batch assembly (`shaders/data.wgsl`): gather + normalise + augment from the u8 data set on
//! the GPU. See the shader for how the step counter selects the examples.

use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, DATA};
use crate::kernels::dropout::hash;
use bytemuck::{Pod, Zeroable};

/// Binding numbers of data.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const IMAGES: u32 = 1;
    pub const LABELS: u32 = 2;
    pub const INDICES: u32 = 3;
    pub const COUNTER: u32 = 4;
    pub const OUT_X: u32 = 5;
    pub const OUT_LABELS: u32 = 6;
}

pub const PIXELS: usize = 784;
const SIDE: usize = 28;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    batch: u32,
    count: u32,
    flip: u32,
    max_shift: u32,
    mean: f32,
    inv_std: f32,
    seed: u32,
    stride: u32,
}

/// Normalisation and augmentation of one gather.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatherConfig {
    pub batch: usize,
    /// Pixels are scaled to [0, 1], then (v - mean) / std.
    pub mean: f32,
    pub std: f32,
    /// Random horizontal flips (augmentation).
    pub flip: bool,
    /// Random shifts of up to this many pixels in x and y, zero filled (augmentation).
    pub max_shift: u32,
    pub seed: u32,
    /// Examples per full step (the batch size of the run); `batch` may be smaller for the
    /// last, partial step of an epoch.
    pub stride: usize,
}

/// Packs bytes into u32 words (little-endian, zero padded) for upload.
pub fn pack_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u32, |w, (i, &b)| w | (b as u32) << (8 * i))
        })
        .collect()
}

/// Builds the gather of `cfg.batch` examples from `indices` (u32 example numbers) into
/// `out_x` `[batch, 1, 28, 28]` and `out_labels` `[batch]`.
#[allow(clippy::too_many_arguments)]
pub fn gather_batch(
    gpu: &Gpu,
    cfg: GatherConfig,
    images: &Tensor,
    labels: &Tensor,
    indices: &Tensor,
    counter: &Tensor,
    out_x: &Tensor,
    out_labels: &Tensor,
) -> Result<Dispatch> {
    let flip = cfg.flip as u32;
    gather(
        gpu, cfg, flip, images, labels, indices, counter, out_x, out_labels,
    )
}

/// `gather_batch` with every image mirrored left to right (test-time augmentation's
/// second view; `cfg.flip` is ignored).
#[allow(clippy::too_many_arguments)]
pub fn gather_batch_mirrored(
    gpu: &Gpu,
    cfg: GatherConfig,
    images: &Tensor,
    labels: &Tensor,
    indices: &Tensor,
    counter: &Tensor,
    out_x: &Tensor,
    out_labels: &Tensor,
) -> Result<Dispatch> {
    gather(
        gpu, cfg, 2, images, labels, indices, counter, out_x, out_labels,
    )
}

/// The gather with data.wgsl's flip code: 0 none, 1 random, 2 every image.
#[allow(clippy::too_many_arguments)]
fn gather(
    gpu: &Gpu,
    cfg: GatherConfig,
    flip: u32,
    images: &Tensor,
    labels: &Tensor,
    indices: &Tensor,
    counter: &Tensor,
    out_x: &Tensor,
    out_labels: &Tensor,
) -> Result<Dispatch> {
    let desc = format!("batch={} of {}", cfg.batch, indices.len);
    if indices.len == 0 || cfg.std <= 0.0 {
        return Err(GpuError::Shape {
            label: "gather_batch".into(),
            message: format!("empty index list or std <= 0 ({desc})"),
        });
    }
    check_len("gather_batch", &desc, out_x, cfg.batch * PIXELS)?;
    check_len("gather_batch", &desc, out_labels, cfg.batch)?;
    let p = Params {
        batch: dim("gather", cfg.batch)?,
        count: dim("gather", indices.len)?,
        flip,
        max_shift: cfg.max_shift,
        mean: cfg.mean,
        inv_std: 1.0 / cfg.std,
        seed: cfg.seed,
        stride: dim("gather", cfg.stride)?,
    };
    let p = gpu.uniform("gather params", &p);
    gpu.dispatch(
        &DATA,
        "gather_batch",
        &desc,
        &[
            (binding::P, &p),
            (binding::IMAGES, &images),
            (binding::LABELS, &labels),
            (binding::INDICES, &indices),
            (binding::COUNTER, &counter),
            (binding::OUT_X, &out_x),
            (binding::OUT_LABELS, &out_labels),
        ],
        gpu.caps.grid(cfg.batch * PIXELS / 4, 256),
    )
}

/// Mirrors each 28x28 image of a gathered batch left to right, in place (the reference of
/// `gather_batch_mirrored`: the plain gather's reference, mirrored).
pub fn mirror_reference(x: &mut [f32]) {
    for row in x.chunks_mut(SIDE) {
        row.reverse();
    }
}

/// CPU reference of one gather at global step `step` with the index list starting at
/// step `start`.
#[allow(clippy::too_many_arguments)]
pub fn gather_batch_reference(
    out_x: &mut [f32],
    out_labels: &mut [u32],
    images: &[u8],
    labels: &[u8],
    indices: &[u32],
    cfg: GatherConfig,
    step: u32,
    start: u32,
) {
    for b in 0..cfg.batch {
        let slot = (((step - start) as usize) * cfg.stride + b).min(indices.len() - 1);
        let example = indices[slot] as usize;
        out_labels[b] = labels[example] as u32;
        let h = hash(b as u32 ^ hash(step ^ hash(cfg.seed ^ 0xa116_0000)));
        for px in 0..PIXELS {
            let (mut y, mut x) = ((px / SIDE) as i32, (px % SIDE) as i32);
            if cfg.flip || cfg.max_shift != 0 {
                if cfg.flip && h & 1 == 1 {
                    x = SIDE as i32 - 1 - x;
                }
                let span = 2 * cfg.max_shift + 1;
                x -= ((h >> 8) % span) as i32 - cfg.max_shift as i32;
                y -= ((h >> 16) % span) as i32 - cfg.max_shift as i32;
            }
            let inside = (0..SIDE as i32).contains(&x) && (0..SIDE as i32).contains(&y);
            let v = if inside {
                images[example * PIXELS + y as usize * SIDE + x as usize] as f32
            } else {
                0.0
            };
            out_x[b * PIXELS + px] = (v / 255.0 - cfg.mean) * (1.0 / cfg.std);
        }
    }
}
