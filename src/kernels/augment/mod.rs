//! Data augmentation on the GPU (`shaders/augment.wgsl`), torchvision's semantics where it
//! has them, from the `--augment` text:
//!
//! ```text
//! flip(p=0.5) vflip(p=0.5) shift(N) resized_crop(scale=0.08:1,ratio=0.75:1.333,p=1)
//! affine(rotate=DEG,translate=FRAC,scale=LO:HI,shear=DEG,p=1) perspective(d=0.5,p=0.5)
//! brightness(B) contrast(C) blur(k=3,sigma=0.1:2,p=1) noise(SIGMA)
//! erase(p=0.5,scale=0.02:0.33,ratio=0.3:3.3,value=0)
//! ```
//!
//! Geometric items (flip, vflip, shift, resized_crop, affine, perspective) are applied to the
//! image in that order whatever order they are written in, composed into one homography per
//! example and sampled bilinearly with zero fill; then brightness, contrast, blur, noise and
//! erase, on pixels in [0, 1] (erase's value too), then the normalisation. Every random number
//! comes from the counter hash of (seed, global step, example slot, item), so a run is
//! reproducible and exact on resume. Kernels: `augment_params` (one thread per example: the
//! homography and the photometric draws), then `gather_pointwise` (a row per thread, no
//! workgroup memory or barriers). Contrast and blur need the whole sampled image, so with
//! them the pixels go through `sample_pointwise` (which also sums each image for contrast,
//! with integer atomics) and `finish_pointwise` (contrast, the blur along rows and columns,
//! noise, erase), a row or 4 rows per thread: faster on lavapipe than one
//! workgroup per example with barriers. The passes sample the training images from a texture
//! atlas (`Atlas`): one `textureGather` reads a bilinear footprint, where the byte buffer
//! took 1–4 storage loads (2.5 on average), each a per-lane loop on lavapipe: the sampling
//! pass takes half the time it did.

mod atlas;
mod draws;
mod grammar;
mod reference;

pub use atlas::{Atlas, AtlasLayout, CELL};
pub use draws::{example_reference, sin_cos};
pub use grammar::{Augment, AugmentError};
pub use reference::gather_augmented_reference;

use super::data::{GatherConfig, PIXELS};
use super::{check_len, dim};
use crate::gpu::{Bindable, Dispatch, Gpu, GpuError, Result, Tensor, AUGMENT};
use bytemuck::{Pod, Zeroable};

/// The side of an image, in pixels.
const SIDE: f32 = 28.0;

/// Binding numbers of augment.wgsl, named as the WGSL names them.
#[allow(dead_code)]
mod binding {
    pub const P: u32 = 0;
    pub const ATLAS: u32 = 1;
    pub const ATLAS_SAMPLER: u32 = 5;
    pub const LABELS: u32 = 2;
    pub const INDICES: u32 = 3;
    pub const COUNTER: u32 = 4;
    pub const OUT_LABELS: u32 = 6;
    pub const EXAMPLE: u32 = 7;
    pub const SUMS: u32 = 8;
    pub const OUT_X4: u32 = 9;
    pub const SAMPLED: u32 = 10;
}

/// Floats per example in the parameter buffer: the 3x3 homography (output → input, in
/// continuous coordinates: pixel centres at i + 0.5), brightness and contrast factors, blur
/// sigma, and the erased rectangle (x, y, w, h; w = 0: none).
pub const PER_EXAMPLE: usize = 16;

/// Floats of scratch per example: the draws (`PER_EXAMPLE`), the image sum for contrast (in
/// a slot of 4, for alignment), and the sampled image (contrast and blur read it whole), its
/// pixels as 16-bit unorm pairs (half the storage accesses of f32; see `quantized`).
pub const SCRATCH_PER_EXAMPLE: usize = PER_EXAMPLE + 4 + PIXELS / 2;

/// What a plan's augmented gather reads and writes besides the batch: the training images as
/// an atlas, and the passes' scratch (`batch * SCRATCH_PER_EXAMPLE` floats: the draws of
/// every example, then contrast's sums, then the sampled images).
pub struct Workspace {
    pub atlas: Atlas,
    pub scratch: Tensor,
}

impl Workspace {
    /// For batches of `batch` examples drawn from `pixels` (28x28 u8 images, in the order the
    /// plan's indices number them).
    pub fn new(gpu: &Gpu, batch: usize, pixels: &[u8]) -> Result<Workspace> {
        Workspace::with_atlas(gpu, batch, Atlas::new(gpu, pixels)?)
    }

    pub fn with_atlas(gpu: &Gpu, batch: usize, atlas: Atlas) -> Result<Workspace> {
        Ok(Workspace {
            atlas,
            scratch: gpu.zeros("augment scratch", batch * SCRATCH_PER_EXAMPLE)?,
        })
    }
}

/// Uniform parameters of the three kernels (std140-compatible, 4-byte fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    batch: u32,
    count: u32,
    seed: u32,
    stride: u32,
    mean: f32,
    inv_std: f32,
    shift: u32,
    photometric: u32,
    flip: f32,
    vflip: f32,
    brightness: f32,
    contrast: f32,
    noise: f32,
    blur_k: u32,
    atlas_per_row: u32,
    atlas_per_layer: u32,
    resized_crop: [f32; 8],
    affine: [f32; 8],
    perspective: [f32; 4],
    blur: [f32; 4],
    erase: [f32; 8],
}

fn pad<const N: usize>(v: Option<&[f32]>) -> [f32; N] {
    let mut out = [0f32; N];
    if let Some(v) = v {
        out[..v.len()].copy_from_slice(v);
    }
    out
}

fn params(a: &Augment, g: &GatherConfig, count: usize, atlas: &AtlasLayout) -> Result<Params> {
    Ok(Params {
        batch: dim("augment", g.batch)?,
        count: dim("augment", count)?,
        seed: g.seed,
        stride: dim("augment", g.stride)?,
        mean: g.mean,
        inv_std: 1.0 / g.std,
        shift: a.shift,
        photometric: a.photometric() as u32,
        flip: a.flip,
        vflip: a.vflip,
        brightness: a.brightness,
        contrast: a.contrast,
        noise: a.noise,
        blur_k: a.blur.map_or(0, |b| b[1] as u32),
        atlas_per_row: dim("augment", atlas.per_row)?,
        atlas_per_layer: dim("augment", atlas.per_row * atlas.rows)?,
        resized_crop: pad(a
            .resized_crop
            .map(|[p, s0, s1, r0, r1]| [p, s0, s1, r0.ln(), r1.ln()])
            .as_ref()
            .map(|v| &v[..])),
        affine: pad(a.affine.as_ref().map(|v| &v[..])),
        perspective: pad(a.perspective.as_ref().map(|v| &v[..])),
        blur: pad(a.blur.as_ref().map(|v| &v[..])),
        erase: pad(a
            .erase
            .map(|[p, s0, s1, r0, r1, v]| [p, s0, s1, r0.ln(), r1.ln(), v])
            .as_ref()
            .map(|v| &v[..])),
    })
}

/// The augmented gather: per-example draws, then the pixels with the photometric items.
/// `ws` holds the images (as an atlas; `labels` numbered alike) and the passes' scratch.
#[allow(clippy::too_many_arguments)]
pub fn gather_augmented(
    gpu: &Gpu,
    a: &Augment,
    g: GatherConfig,
    ws: &Workspace,
    labels: &Tensor,
    indices: &Tensor,
    counter: &Tensor,
    out_x: &Tensor,
    out_labels: &Tensor,
) -> Result<Vec<Dispatch>> {
    let example = &ws.scratch;
    let desc = format!("batch={} of {}", g.batch, indices.len);
    if indices.len == 0 || g.std <= 0.0 {
        return Err(GpuError::Shape {
            label: "gather_augmented".into(),
            message: format!("empty index list or std <= 0 ({desc})"),
        });
    }
    check_len("gather_augmented", &desc, out_x, g.batch * PIXELS)?;
    check_len("gather_augmented", &desc, out_labels, g.batch)?;
    check_len(
        "gather_augmented",
        &desc,
        example,
        g.batch * SCRATCH_PER_EXAMPLE,
    )?;
    let p = gpu.uniform(
        "augment params",
        &params(a, &g, indices.len, &ws.atlas.layout)?,
    );
    let mut out = vec![gpu.dispatch(
        &AUGMENT,
        "augment_params",
        &desc,
        &[
            (binding::P, &p),
            (binding::COUNTER, &counter),
            (binding::EXAMPLE, &example),
        ],
        gpu.caps.grid(g.batch, 64),
    )?];
    // Everything runs pixel by pixel; contrast (the image mean) and blur (neighbours) need
    // the whole sampled image first, so they split the work into passes rather than staging
    // each example in one workgroup (barriers are slow on lavapipe).
    let entries: Vec<&str> = match a.contrast > 0.0 || a.blur.is_some() {
        false => vec!["gather_pointwise"],
        true => vec!["sample_pointwise", "finish_pointwise"],
    };
    let all: [(u32, &dyn Bindable); _] = [
        (binding::P, &p),
        (binding::LABELS, &labels),
        (binding::INDICES, &indices),
        (binding::COUNTER, &counter),
        (binding::OUT_LABELS, &out_labels),
        (binding::EXAMPLE, &example),
        (binding::SUMS, &example),
        (binding::OUT_X4, &out_x),
        (binding::SAMPLED, &example),
    ];
    for entry in entries {
        // Each entry point's layout holds only the bindings it uses.
        use binding::*;
        let used: &[u32] = match entry {
            "gather_pointwise" => &[P, LABELS, INDICES, COUNTER, OUT_LABELS, EXAMPLE, OUT_X4],
            "sample_pointwise" => &[
                P, LABELS, INDICES, COUNTER, OUT_LABELS, EXAMPLE, SUMS, SAMPLED,
            ],
            _ => &[P, COUNTER, EXAMPLE, OUT_X4, SAMPLED],
        };
        let mut bindings: Vec<_> = all
            .iter()
            .filter(|(n, _)| used.contains(n))
            .map(|(n, b)| (*n, b.resource()))
            .collect();
        // The passes that sample read the atlas.
        if entry != "finish_pointwise" {
            bindings.push((ATLAS, wgpu::BindingResource::TextureView(&ws.atlas.view)));
            bindings.push((
                ATLAS_SAMPLER,
                wgpu::BindingResource::Sampler(&ws.atlas.sampler),
            ));
        }
        // A row per thread; 4 rows in the last pass (its FINISH_ROWS).
        let rows = match entry {
            "finish_pointwise" => 7,
            _ => 28,
        };
        out.push(gpu.dispatch_resources(
            &AUGMENT,
            entry,
            &desc,
            bindings,
            gpu.caps.grid(g.batch * rows, 64),
        )?);
    }
    Ok(out)
}

/// What the model sees: `draws` augmented versions of each image (28x28 u8), drawn on the
/// GPU as training would at steps 0, 1, … with `seed`. Returns `[image][draw]` pixels.
pub fn preview(
    gpu: &Gpu,
    a: &Augment,
    images: &[Vec<u8>],
    draws: usize,
    seed: u32,
) -> Result<Vec<Vec<Vec<u8>>>> {
    let n = images.len();
    let bytes: Vec<u8> = images.concat();
    let labels_t = gpu.upload(
        "preview labels (u8)",
        &super::data::pack_bytes(&vec![0u8; n]),
    )?;
    let indices = gpu.upload("preview indices", &(0..n as u32).collect::<Vec<_>>())?;
    let ws = Workspace::new(gpu, n, &bytes)?;
    let out_x = gpu.zeros("preview batch", n * PIXELS)?;
    let out_y = gpu.zeros("preview labels", n)?;
    let g = GatherConfig {
        batch: n,
        mean: 0.0,
        std: 1.0,
        flip: false,
        max_shift: 0,
        seed,
        stride: n,
    };
    let mut out = vec![Vec::new(); n];
    for d in 0..draws as u32 {
        let counter = gpu.upload("preview counter", &[d, d])?;
        let plan = gather_augmented(
            gpu, a, g, &ws, &labels_t, &indices, &counter, &out_x, &out_y,
        )?;
        gpu.run(&plan.iter().collect::<Vec<_>>())?;
        let x: Vec<f32> = gpu.read(&out_x)?;
        for (i, img) in x.chunks(PIXELS).enumerate() {
            out[i].push(
                img.iter()
                    .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                    .collect(),
            );
        }
    }
    Ok(out)
}
