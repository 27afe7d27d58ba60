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

use super::data::{GatherConfig, PIXELS};
use super::{check_len, dim};
use crate::gpu::{Dispatch, Gpu, GpuError, Result, Tensor, AUGMENT};
use crate::kernels::dropout::hash;
use bytemuck::{Pod, Zeroable};
use std::fmt;
use thiserror::Error;

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

/// Texels from one image to the next in the atlas: its 28 pixels and a zero column (and row)
/// shared with the next, so a bilinear footprint reaching one pixel past an edge reads zeros
/// (the zero fill) with no bounds test.
pub const CELL: usize = 29;

/// Where each image lies in the atlas: `per_row` images side by side, `rows` of them in a
/// layer, `layers` layers (a 2D array texture), image `ex` in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtlasLayout {
    pub per_row: usize,
    pub rows: usize,
    pub layers: usize,
}

impl AtlasLayout {
    /// The smallest layout of `count` images in as few layers of at most `side` x `side`
    /// texels as hold them; None past `max_layers`.
    pub fn new(count: usize, side: u32, max_layers: u32) -> Option<AtlasLayout> {
        let fit = (side as usize).saturating_sub(1) / CELL;
        if fit == 0 {
            return None;
        }
        let count = count.max(1);
        let layers = count.div_ceil(fit * fit);
        if layers > max_layers as usize {
            return None;
        }
        let per_layer = count.div_ceil(layers);
        let per_row = fit.min(per_layer);
        Some(AtlasLayout {
            per_row,
            rows: per_layer.div_ceil(per_row),
            layers,
        })
    }

    pub fn width(&self) -> u32 {
        (self.per_row * CELL + 1) as u32
    }

    pub fn height(&self) -> u32 {
        (self.rows * CELL + 1) as u32
    }

    /// Image `ex`'s layer and the texel (x, y) of its pixel (0, 0) (as augment.wgsl's
    /// `cell_of` computes it).
    pub fn origin(&self, ex: usize) -> (usize, usize, usize) {
        let per_layer = self.per_row * self.rows;
        let within = ex % per_layer;
        (
            ex / per_layer,
            (within % self.per_row) * CELL + 1,
            (within / self.per_row) * CELL + 1,
        )
    }

    /// Layer `layer`'s texels (row-major) from the images' pixels (28x28 each, in order):
    /// zero between and around the images.
    pub fn layer_texels(&self, layer: usize, pixels: &[u8]) -> Vec<u8> {
        let (w, h) = (self.width() as usize, self.height() as usize);
        let mut texels = vec![0u8; w * h];
        let per_layer = self.per_row * self.rows;
        let count = pixels.len() / PIXELS;
        for ex in layer * per_layer..count.min((layer + 1) * per_layer) {
            let (_, x, y) = self.origin(ex);
            for (r, row) in pixels[ex * PIXELS..(ex + 1) * PIXELS]
                .chunks(28)
                .enumerate()
            {
                texels[(y + r) * w + x..][..28].copy_from_slice(row);
            }
        }
        texels
    }
}

/// The training images as an R8 texture atlas, for the augmented passes' bilinear sampling:
/// a `textureGather` reads the 4 texels of a footprint in one operation (vectorised on
/// lavapipe, a texture fetch on a GPU). 1 byte per texel: the 60,000 images take 50 MB.
pub struct Atlas {
    pub layout: AtlasLayout,
    _texture: wgpu::Texture,
    view: wgpu::TextureView,
    sampler: wgpu::Sampler,
}

impl Atlas {
    /// The atlas of `pixels` (28x28 u8 images in order) in layers as large as the adapter
    /// allows.
    pub fn new(gpu: &Gpu, pixels: &[u8]) -> Result<Atlas> {
        Atlas::with_side(gpu, pixels, gpu.limits.max_texture_dimension_2d)
    }

    /// The same in layers of at most `side` x `side` texels (tests use small ones to spread a
    /// few images over rows and layers).
    pub fn with_side(gpu: &Gpu, pixels: &[u8], side: u32) -> Result<Atlas> {
        let count = pixels.len() / PIXELS;
        let side = side.min(gpu.limits.max_texture_dimension_2d);
        let max_layers = gpu.limits.max_texture_array_layers;
        let layout = AtlasLayout::new(count, side, max_layers).ok_or(GpuError::AtlasTooLarge {
            images: count,
            side,
            layers: max_layers,
        })?;
        let size = wgpu::Extent3d {
            width: layout.width(),
            height: layout.height(),
            depth_or_array_layers: layout.layers as u32,
        };
        let texture = gpu.scoped(
            || format!("creating the augmentation atlas ({size:?})"),
            || {
                gpu.device.create_texture(&wgpu::TextureDescriptor {
                    label: Some("augment atlas"),
                    size,
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: wgpu::TextureFormat::R8Unorm,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                })
            },
        )?;
        for layer in 0..layout.layers {
            gpu.queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: 0,
                        z: layer as u32,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                &layout.layer_texels(layer, pixels),
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(layout.width()),
                    rows_per_image: Some(layout.height()),
                },
                wgpu::Extent3d {
                    depth_or_array_layers: 1,
                    ..size
                },
            );
        }
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        // Gathers ignore filtering; clamping never comes into play (every footprint lies
        // inside the atlas).
        let sampler = gpu.device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("augment atlas"),
            ..Default::default()
        });
        Ok(Atlas {
            layout,
            _texture: texture,
            view,
            sampler,
        })
    }
}

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
const SIDE: f32 = 28.0;

#[derive(Debug, Error, PartialEq)]
#[error("--augment `{item}`: {message}")]
pub struct AugmentError {
    pub item: String,
    pub message: String,
}

/// The parsed `--augment` text; the default is no augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    pub flip: f32,
    pub vflip: f32,
    pub shift: u32,
    /// (p, scale lo, scale hi, ratio lo, ratio hi)
    pub resized_crop: Option<[f32; 5]>,
    /// (p, degrees, translate fraction, scale lo, scale hi, shear degrees)
    pub affine: Option<[f32; 6]>,
    /// (p, distortion)
    pub perspective: Option<[f32; 2]>,
    pub brightness: f32,
    pub contrast: f32,
    /// (p, kernel size, sigma lo, sigma hi)
    pub blur: Option<[f32; 4]>,
    pub noise: f32,
    /// (p, scale lo, scale hi, ratio lo, ratio hi, value)
    pub erase: Option<[f32; 6]>,
}

fn range(v: &str) -> Option<(f32, f32)> {
    match v.split_once(':') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => v.trim().parse().ok().map(|x: f32| (x, x)),
    }
}

impl Augment {
    pub fn is_on(&self) -> bool {
        *self != Augment::default()
    }

    fn photometric(&self) -> bool {
        self.brightness > 0.0
            || self.contrast > 0.0
            || self.blur.is_some()
            || self.noise > 0.0
            || self.erase.is_some()
    }

    pub fn parse(text: &str) -> std::result::Result<Augment, AugmentError> {
        let mut a = Augment::default();
        let t = text.trim();
        if t.is_empty() || t == "none" {
            return Ok(a);
        }
        // Items are separated by spaces outside parentheses.
        let mut items = Vec::new();
        let (mut depth, mut cur) = (0i32, String::new());
        for c in t.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                c if c.is_whitespace() && depth == 0 => {
                    if !cur.is_empty() {
                        items.push(std::mem::take(&mut cur));
                    }
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        if !cur.is_empty() {
            items.push(cur);
        }
        for item in items {
            a.add(&item)?;
        }
        Ok(a)
    }

    fn add(&mut self, item: &str) -> std::result::Result<(), AugmentError> {
        let err = |message: String| AugmentError {
            item: item.to_string(),
            message,
        };
        let (name, args) = match item.find('(') {
            Some(i) => (
                &item[..i],
                item[i + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| err("missing the closing `)`".into()))?,
            ),
            None => (item, ""),
        };
        // Positional arguments take the item's first key.
        let keys: &[&str] = match name {
            "flip" | "vflip" => &["p"],
            "shift" => &["n"],
            "resized_crop" => &["scale", "ratio", "p"],
            "affine" => &["rotate", "translate", "scale", "shear", "p"],
            "perspective" => &["d", "p"],
            "brightness" | "contrast" | "noise" => &["amount"],
            "blur" => &["k", "sigma", "p"],
            "erase" => &["p", "scale", "ratio", "value"],
            other => {
                return Err(err(format!(
                    "unknown augmentation `{other}` (flip, vflip, shift, resized_crop, affine, perspective, brightness, contrast, blur, noise, erase)"
                )))
            }
        };
        let mut given: Vec<(&str, &str)> = Vec::new();
        for (i, arg) in args
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let (k, v) = match arg.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None if i == 0 => (keys[0], arg),
                None => return Err(err(format!("`{arg}` should be key=value"))),
            };
            if !keys.contains(&k) {
                return Err(err(format!(
                    "`{name}` has no setting `{k}` (it takes: {})",
                    keys.join(", ")
                )));
            }
            given.push((k, v));
        }
        let get = |k: &str| given.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let num =
            |k: &str, default: f32, lo: f32, hi: f32| -> std::result::Result<f32, AugmentError> {
                let Some(v) = get(k) else { return Ok(default) };
                let x: f32 = v
                    .parse()
                    .map_err(|_| err(format!("{k} = `{v}` is not a number")))?;
                if !(lo..=hi).contains(&x) {
                    return Err(err(format!("{k} = {x} must be in [{lo}, {hi}]")));
                }
                Ok(x)
            };
        let span = |k: &str,
                    default: (f32, f32),
                    lo: f32,
                    hi: f32|
         -> std::result::Result<(f32, f32), AugmentError> {
            let Some(v) = get(k) else { return Ok(default) };
            let (a, b) =
                range(v).ok_or_else(|| err(format!("{k} = `{v}` should be a number or LO:HI")))?;
            if !(lo <= a && a <= b && b <= hi) {
                return Err(err(format!(
                    "{k} = {a}:{b} must satisfy {lo} <= LO <= HI <= {hi}"
                )));
            }
            Ok((a, b))
        };
        match name {
            "flip" => self.flip = num("p", 0.5, 0.0, 1.0)?,
            "vflip" => self.vflip = num("p", 0.5, 0.0, 1.0)?,
            "shift" => {
                let n = num("n", f32::NAN, 0.0, 14.0)?;
                if n.is_nan() || n.fract() != 0.0 {
                    return Err(err("needs a whole number of pixels, e.g. shift(2)".into()));
                }
                self.shift = n as u32;
            }
            "resized_crop" => {
                let (s0, s1) = span("scale", (0.08, 1.0), 0.0001, 1.0)?;
                let (r0, r1) = span("ratio", (0.75, 4.0 / 3.0), 0.01, 100.0)?;
                self.resized_crop = Some([num("p", 1.0, 0.0, 1.0)?, s0, s1, r0, r1]);
            }
            "affine" => {
                let (s0, s1) = span("scale", (1.0, 1.0), 0.1, 10.0)?;
                self.affine = Some([
                    num("p", 1.0, 0.0, 1.0)?,
                    num("rotate", 0.0, 0.0, 180.0)?,
                    num("translate", 0.0, 0.0, 1.0)?,
                    s0,
                    s1,
                    num("shear", 0.0, 0.0, 80.0)?,
                ]);
            }
            "perspective" => {
                self.perspective = Some([num("p", 0.5, 0.0, 1.0)?, num("d", 0.5, 0.0, 1.0)?])
            }
            "brightness" => {
                self.brightness =
                    num("amount", f32::NAN, 0.0, 10.0).and_then(|v| required(v, &err))?
            }
            "contrast" => {
                self.contrast =
                    num("amount", f32::NAN, 0.0, 10.0).and_then(|v| required(v, &err))?
            }
            "noise" => {
                self.noise = num("amount", f32::NAN, 0.0, 10.0).and_then(|v| required(v, &err))?
            }
            "blur" => {
                let k = num("k", 3.0, 1.0, 15.0)?;
                if k.fract() != 0.0 || (k as u32).is_multiple_of(2) {
                    return Err(err(format!("k = {k} must be an odd kernel size (1 to 15)")));
                }
                let (s0, s1) = span("sigma", (0.1, 2.0), 0.01, 20.0)?;
                self.blur = Some([num("p", 1.0, 0.0, 1.0)?, k, s0, s1]);
            }
            _ => {
                let (s0, s1) = span("scale", (0.02, 0.33), 0.0001, 1.0)?;
                let (r0, r1) = span("ratio", (0.3, 3.3), 0.01, 100.0)?;
                self.erase = Some([
                    num("p", 0.5, 0.0, 1.0)?,
                    s0,
                    s1,
                    r0,
                    r1,
                    num("value", 0.0, 0.0, 1.0)?,
                ]);
            }
        }
        Ok(())
    }
}

fn required(
    v: f32,
    err: &dyn Fn(String) -> AugmentError,
) -> std::result::Result<f32, AugmentError> {
    if v.is_nan() {
        Err(err("needs an amount, e.g. brightness(0.2)".into()))
    } else {
        Ok(v)
    }
}

impl fmt::Display for Augment {
    /// The canonical text (what config.toml stores; parses back to the same).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        if self.flip > 0.0 {
            items.push(format!("flip(p={})", self.flip));
        }
        if self.vflip > 0.0 {
            items.push(format!("vflip(p={})", self.vflip));
        }
        if self.shift > 0 {
            items.push(format!("shift({})", self.shift));
        }
        if let Some([p, s0, s1, r0, r1]) = self.resized_crop {
            items.push(format!(
                "resized_crop(scale={s0}:{s1},ratio={r0}:{r1},p={p})"
            ));
        }
        if let Some([p, deg, t, s0, s1, sh]) = self.affine {
            items.push(format!(
                "affine(rotate={deg},translate={t},scale={s0}:{s1},shear={sh},p={p})"
            ));
        }
        if let Some([p, d]) = self.perspective {
            items.push(format!("perspective(d={d},p={p})"));
        }
        if self.brightness > 0.0 {
            items.push(format!("brightness({})", self.brightness));
        }
        if self.contrast > 0.0 {
            items.push(format!("contrast({})", self.contrast));
        }
        if let Some([p, k, s0, s1]) = self.blur {
            items.push(format!("blur(k={k},sigma={s0}:{s1},p={p})"));
        }
        if self.noise > 0.0 {
            items.push(format!("noise({})", self.noise));
        }
        if let Some([p, s0, s1, r0, r1, v]) = self.erase {
            items.push(format!(
                "erase(p={p},scale={s0}:{s1},ratio={r0}:{r1},value={v})"
            ));
        }
        if items.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", items.join(" "))
        }
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
            (binding::COUNTER, &counter.buffer),
            (binding::EXAMPLE, &example.buffer),
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
    let all = [
        (binding::P, &p),
        (binding::LABELS, &labels.buffer),
        (binding::INDICES, &indices.buffer),
        (binding::COUNTER, &counter.buffer),
        (binding::OUT_LABELS, &out_labels.buffer),
        (binding::EXAMPLE, &example.buffer),
        (binding::SUMS, &example.buffer),
        (binding::OUT_X4, &out_x.buffer),
        (binding::SAMPLED, &example.buffer),
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
            .map(|(n, b)| (*n, b.as_entire_binding()))
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

// ---- CPU reference (the same draws, in the same f32 arithmetic) ----

/// The hash stream of example slot `b` at global step `step`, item `salt`.
fn stream(seed: u32, step: u32, b: u32, salt: u32) -> u32 {
    hash(salt ^ hash(b ^ hash(step ^ hash(seed ^ 0xa116_0000))))
}

/// A uniform draw in [0, 1) from the `n`th number of a stream.
fn uniform(h: u32, n: u32) -> f32 {
    (hash(h ^ n.wrapping_mul(0x9e37_79b9)) >> 8) as f32 * (1.0 / 16_777_216.0)
}

type Mat = [f32; 9];

fn mul(a: &Mat, b: &Mat) -> Mat {
    let mut m = [0f32; 9];
    for r in 0..3 {
        for c in 0..3 {
            m[r * 3 + c] = a[r * 3] * b[c] + a[r * 3 + 1] * b[3 + c] + a[r * 3 + 2] * b[6 + c];
        }
    }
    m
}

const ID: Mat = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

/// torchvision's crop box (RandomResizedCrop.get_params / RandomErasing.get_params): up to
/// ten tries of an area fraction and a log-uniform aspect ratio; (x, y, w, h) or None.
fn random_box(
    h: u32,
    first: u32,
    s0: f32,
    s1: f32,
    r0: f32,
    r1: f32,
    fits: impl Fn(f32, f32) -> bool,
) -> Option<[f32; 4]> {
    for attempt in 0..10u32 {
        let n = first + attempt * 4;
        let area = SIDE * SIDE * (s0 + (s1 - s0) * uniform(h, n));
        let aspect = (r0 + (r1 - r0) * uniform(h, n + 1)).exp();
        // WGSL's round() ties to even, as Python's round() in torchvision does.
        let w = (area * aspect).sqrt().round_ties_even();
        let hh = (area / aspect).sqrt().round_ties_even();
        if fits(w, hh) {
            let x = (uniform(h, n + 2) * (SIDE - w + 1.0)).floor();
            let y = (uniform(h, n + 3) * (SIDE - hh + 1.0)).floor();
            return Some([x, y, w, hh]);
        }
    }
    None
}

/// Solves the 8x8 system of torchvision's `_get_perspective_coeffs` (Gaussian elimination
/// with partial pivoting, f32); the 3x3 matrix mapping output to input index coordinates.
fn perspective_matrix(end: &[[f32; 2]; 4], start: &[[f32; 2]; 4]) -> Mat {
    let mut a = [[0f32; 9]; 8];
    for i in 0..4 {
        let ([x, y], [u, v]) = (end[i], start[i]);
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    for col in 0..8 {
        let mut pivot = col;
        for r in col + 1..8 {
            if a[r][col].abs() > a[pivot][col].abs() {
                pivot = r;
            }
        }
        a.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-12 {
            return ID;
        }
        for r in 0..8 {
            if r != col {
                let f = a[r][col] / d;
                let pivot_row = a[col];
                for (x, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    let c: Vec<f32> = (0..8).map(|i| a[i][8] / a[i][i]).collect();
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], 1.0]
}

/// The per-example draws of `augment_params` for slot `b` at `step`.
pub fn example_reference(a: &Augment, seed: u32, step: u32, b: u32) -> [f32; PER_EXAMPLE] {
    let mut m = ID;
    // Geometric items in image order; each multiplies on the right its inverse map.
    // flip / shift keep the draws of the plain gather (one hash, bits 0, 8 and 16).
    let legacy = hash(b ^ hash(step ^ hash(seed ^ 0xa116_0000)));
    if a.flip > 0.0 && uniform(stream(seed, step, b, 1), 0) < a.flip {
        m = mul(&m, &[-1.0, 0.0, SIDE, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }
    if a.vflip > 0.0 && uniform(stream(seed, step, b, 2), 0) < a.vflip {
        m = mul(&m, &[1.0, 0.0, 0.0, 0.0, -1.0, SIDE, 0.0, 0.0, 1.0]);
    }
    if a.shift > 0 {
        let span = 2 * a.shift + 1;
        let dx = ((legacy >> 8) % span) as f32 - a.shift as f32;
        let dy = ((legacy >> 16) % span) as f32 - a.shift as f32;
        m = mul(&m, &[1.0, 0.0, -dx, 0.0, 1.0, -dy, 0.0, 0.0, 1.0]);
    }
    if let Some([p, s0, s1, r0, r1]) = a.resized_crop {
        let h = stream(seed, step, b, 3);
        if uniform(h, 0) < p {
            let [x, y, w, hh] = random_box(h, 1, s0, s1, r0.ln(), r1.ln(), |w, hh| {
                w > 0.0 && w <= SIDE && hh > 0.0 && hh <= SIDE
            })
            .unwrap_or([0.0, 0.0, SIDE, SIDE]);
            m = mul(&m, &[w / SIDE, 0.0, x, 0.0, hh / SIDE, y, 0.0, 0.0, 1.0]);
        }
    }
    if let Some([p, deg, t, s0, s1, sh]) = a.affine {
        let h = stream(seed, step, b, 4);
        if uniform(h, 0) < p {
            let angle = (-deg + 2.0 * deg * uniform(h, 1)).to_radians();
            let max_t = t * SIDE;
            let tx = (-max_t + 2.0 * max_t * uniform(h, 2)).round_ties_even();
            let ty = (-max_t + 2.0 * max_t * uniform(h, 3)).round_ties_even();
            let scale = s0 + (s1 - s0) * uniform(h, 4);
            let shear = (-sh + 2.0 * sh * uniform(h, 5)).to_radians();
            // torchvision's _get_inverse_affine_matrix (shear in x only), centre 14.
            let ((sin_a, cos_a), (sin_s, cos_s)) = (sin_cos(angle), sin_cos(shear));
            let tan_shear = sin_s / cos_s;
            let (a_, b_) = (cos_a, -cos_a * tan_shear - sin_a);
            let (c_, d_) = (sin_a, -sin_a * tan_shear + cos_a);
            let (i0, i1, i3, i4) = (d_ / scale, -b_ / scale, -c_ / scale, a_ / scale);
            let (cx, cy) = (SIDE / 2.0, SIDE / 2.0);
            let i2 = i0 * (-cx - tx) + i1 * (-cy - ty) + cx;
            let i5 = i3 * (-cx - tx) + i4 * (-cy - ty) + cy;
            m = mul(&m, &[i0, i1, i2, i3, i4, i5, 0.0, 0.0, 1.0]);
        }
    }
    if let Some([p, d]) = a.perspective {
        let h = stream(seed, step, b, 5);
        if uniform(h, 0) < p {
            let half = 14.0f32;
            let dist = (d * half).floor();
            let lo = |n: u32| (uniform(h, n) * (dist + 1.0)).floor();
            let hi = |n: u32| SIDE - dist - 1.0 + (uniform(h, n) * (dist + 1.0)).floor();
            let end = [
                [lo(1), lo(2)],
                [hi(3), lo(4)],
                [hi(5), hi(6)],
                [lo(7), hi(8)],
            ];
            let start = [
                [0.0, 0.0],
                [SIDE - 1.0, 0.0],
                [SIDE - 1.0, SIDE - 1.0],
                [0.0, SIDE - 1.0],
            ];
            let pm = perspective_matrix(&end, &start);
            // Index coordinates (centre of pixel i at i) to continuous (at i + 0.5).
            let to_index = [1.0, 0.0, -0.5, 0.0, 1.0, -0.5, 0.0, 0.0, 1.0];
            let to_cont = [1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 0.0, 1.0];
            m = mul(&m, &mul(&to_cont, &mul(&pm, &to_index)));
        }
    }
    let mut out = [0f32; PER_EXAMPLE];
    out[..9].copy_from_slice(&m);
    let factor = |salt: u32, amount: f32| {
        let u = uniform(stream(seed, step, b, salt), 0);
        let lo = (1.0 - amount).max(0.0);
        lo + (1.0 + amount - lo) * u
    };
    out[9] = if a.brightness > 0.0 {
        factor(6, a.brightness)
    } else {
        1.0
    };
    out[10] = if a.contrast > 0.0 {
        factor(7, a.contrast)
    } else {
        1.0
    };
    if let Some([p, _, s0, s1]) = a.blur {
        let h = stream(seed, step, b, 8);
        if uniform(h, 0) < p {
            out[11] = s0 + (s1 - s0) * uniform(h, 1);
        }
    }
    if let Some([p, s0, s1, r0, r1, _]) = a.erase {
        let h = stream(seed, step, b, 9);
        if uniform(h, 0) < p {
            // RandomErasing's height takes the ratio where RandomResizedCrop's width does:
            // the same box with the log ratio negated.
            if let Some(r) = random_box(h, 1, s0, s1, -r1.ln(), -r0.ln(), |w, hh| {
                (1.0..SIDE).contains(&w) && (1.0..SIDE).contains(&hh)
            }) {
                out[12..16].copy_from_slice(&r);
            }
        }
    }
    out
}

/// A standard normal draw for pixel `px` of slot `b` (Box-Muller on two hashes).
fn normal(seed: u32, step: u32, b: u32, px: u32) -> f32 {
    let h = stream(seed, step, b, 10 + px);
    let u1 = uniform(h, 0).max(1e-7);
    let u2 = uniform(h, 1);
    (-2.0 * u1.ln()).sqrt() * sin_cos(std::f32::consts::TAU * u2).1
}

/// (sin x, cos x) as the shader's `sin_cos` computes them, step for step: both sides agree
/// to the last bits on every adapter, where the built-in sin/cos may err by 2^-11.
pub fn sin_cos(x: f32) -> (f32, f32) {
    let j = (x * 0.636_619_75).round_ties_even();
    let r = ((x - j * 1.570_312_5) - j * 4.837_513e-4) - j * 7.549_79e-8;
    let z = r * r;
    let s = r + r * z * (-1.666_665_5e-1 + z * (8.332_161e-3 + z * -1.951_529_6e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166_664_6e-2 + z * (-1.388_731_6e-3 + z * 2.443_315_7e-5));
    match (j as i32) & 3 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// A pixel in [0, 1] as the passes with contrast or blur keep the sampled image between
/// them: 16-bit unorm (WGSL's pack2x16unorm), within 8e-6.
fn quantized(x: f32) -> f32 {
    (x.clamp(0.0, 1.0) * 65535.0 + 0.5).floor() / 65535.0
}

/// CPU reference of `gather_augmented` (all its passes) at global step `step` with the
/// index list starting at `start`.
#[allow(clippy::too_many_arguments)]
pub fn gather_augmented_reference(
    out_x: &mut [f32],
    out_labels: &mut [u32],
    images: &[u8],
    labels: &[u8],
    indices: &[u32],
    a: &Augment,
    g: GatherConfig,
    step: u32,
    start: u32,
) {
    let side = SIDE as usize;
    for b in 0..g.batch {
        let slot = (((step - start) as usize) * g.stride + b).min(indices.len() - 1);
        let example = indices[slot] as usize;
        out_labels[b] = labels[example] as u32;
        let e = example_reference(a, g.seed, step, b as u32);
        let img = &images[example * PIXELS..(example + 1) * PIXELS];
        let at = |x: i32, y: i32| -> f32 {
            if (0..28).contains(&x) && (0..28).contains(&y) {
                img[y as usize * side + x as usize] as f32 / 255.0
            } else {
                0.0
            }
        };
        let mut v = vec![0f32; PIXELS];
        for (px, out) in v.iter_mut().enumerate() {
            let (ox, oy) = ((px % side) as f32 + 0.5, (px / side) as f32 + 0.5);
            let w = e[6] * ox + e[7] * oy + e[8];
            let sx = (e[0] * ox + e[1] * oy + e[2]) / w - 0.5;
            let sy = (e[3] * ox + e[4] * oy + e[5]) / w - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i32, y0 as i32);
            *out = (at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx) * (1.0 - fy)
                + (at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx) * fy;
        }
        if a.photometric() {
            for x in v.iter_mut() {
                *x = (*x * e[9]).clamp(0.0, 1.0);
            }
            if a.contrast > 0.0 || a.blur.is_some() {
                for x in v.iter_mut() {
                    *x = quantized(*x);
                }
            }
            if a.contrast > 0.0 {
                let mean = v.iter().sum::<f32>() / PIXELS as f32;
                for x in v.iter_mut() {
                    *x = (e[10] * *x + (1.0 - e[10]) * mean).clamp(0.0, 1.0);
                }
            }
            if let (Some([_, k, _, _]), true) = (a.blur, e[11] > 0.0) {
                let r = (k as i32 - 1) / 2;
                let weights: Vec<f32> = (-r..=r)
                    .map(|i| (-0.5 * (i as f32 / e[11]).powi(2)).exp())
                    .collect();
                let total: f32 = weights.iter().sum();
                let reflect = |i: i32| -> usize {
                    let i = if i < 0 { -i } else { i };
                    (if i > 27 { 54 - i } else { i }) as usize
                };
                let mut tmp = vec![0f32; PIXELS];
                for y in 0..side {
                    for x in 0..side {
                        tmp[y * side + x] = (-r..=r)
                            .map(|i| {
                                weights[(i + r) as usize] * v[y * side + reflect(x as i32 + i)]
                            })
                            .sum::<f32>()
                            / total;
                    }
                }
                for y in 0..side {
                    for x in 0..side {
                        v[y * side + x] = (-r..=r)
                            .map(|i| {
                                weights[(i + r) as usize] * tmp[reflect(y as i32 + i) * side + x]
                            })
                            .sum::<f32>()
                            / total;
                    }
                }
            }
            if a.noise > 0.0 {
                for (px, x) in v.iter_mut().enumerate() {
                    *x = (*x + a.noise * normal(g.seed, step, b as u32, px as u32)).clamp(0.0, 1.0);
                }
            }
            if let (Some([.., value]), true) = (a.erase, e[14] > 0.0) {
                let [ex, ey, ew, eh] = [e[12], e[13], e[14], e[15]];
                for (px, x) in v.iter_mut().enumerate() {
                    let (cx, cy) = ((px % side) as f32, (px / side) as f32);
                    if cx >= ex && cx < ex + ew && cy >= ey && cy < ey + eh {
                        *x = value;
                    }
                }
            }
        }
        for (px, x) in v.iter().enumerate() {
            out_x[b * PIXELS + px] = (x - g.mean) * (1.0 / g.std);
        }
    }
}

/// What the model sees: `draws` augmented versions of each image (28x28 u8), drawn on the
/// GPU as training would at steps 0, 1, … with `seed`. Returns [image][draw] pixels.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atlas_holds_every_image_in_its_cell_with_zeros_between() {
        // The training set on lavapipe (16384) and on a WebGPU-default adapter (8192): one
        // layer, rows as needed; a small side spreads over layers; too few layers is None.
        let l = AtlasLayout::new(60_000, 16384, 2048).unwrap();
        assert_eq!(
            l,
            AtlasLayout {
                per_row: 564,
                rows: 107,
                layers: 1
            }
        );
        assert_eq!((l.width(), l.height()), (16357, 3104));
        let l = AtlasLayout::new(60_000, 8192, 256).unwrap();
        assert_eq!((l.per_row, l.rows, l.layers), (282, 213, 1));
        let l = AtlasLayout::new(60_000, 2048, 256).unwrap();
        assert_eq!((l.per_row, l.rows, l.layers), (70, 66, 13));
        assert!(l.per_row * l.rows * l.layers >= 60_000);
        assert_eq!(AtlasLayout::new(60_000, 2048, 12), None);
        assert_eq!(AtlasLayout::new(1, 28, 1), None);

        let l = AtlasLayout::new(5, 2 * CELL as u32 + 1, 4).unwrap();
        assert_eq!(
            l,
            AtlasLayout {
                per_row: 2,
                rows: 2,
                layers: 2
            }
        );
        assert_eq!(l.origin(4), (1, 1, 1));
        assert_eq!(l.origin(3), (0, CELL + 1, CELL + 1));
        let pixels: Vec<u8> = (0..5 * PIXELS).map(|i| (i % 251) as u8 + 1).collect();
        let layer = l.layer_texels(0, &pixels);
        let w = l.width() as usize;
        assert_eq!(layer.len(), w * l.height() as usize);
        for ex in 0..4 {
            let (_, x, y) = l.origin(ex);
            for py in 0..28 {
                for px in 0..28 {
                    assert_eq!(
                        layer[(y + py) * w + x + px],
                        pixels[ex * PIXELS + py * 28 + px]
                    );
                }
            }
        }
        // Every texel not in a cell is a zero; the images themselves have none.
        assert_eq!(
            layer.iter().filter(|&&t| t == 0).count(),
            layer.len() - 4 * PIXELS
        );
        let last = l.layer_texels(1, &pixels);
        assert_eq!(last.iter().filter(|&&t| t != 0).count(), PIXELS);
    }

    #[test]
    fn the_grammar_round_trips_and_names_bad_items() {
        let text = "affine(rotate=10,translate=0.1,scale=0.9:1.1) flip erase(p=0.5) noise(0.05) shift(2) blur(k=5,sigma=0.5:1) perspective(0.3) resized_crop(scale=0.5:1) vflip(p=0.1) brightness(0.2) contrast(0.3)";
        let a = Augment::parse(text).unwrap();
        assert_eq!(a.flip, 0.5);
        assert_eq!(a.shift, 2);
        assert_eq!(a.perspective, Some([0.5, 0.3]));
        let again = Augment::parse(&a.to_string()).unwrap();
        assert_eq!(again.to_string(), a.to_string());
        assert_eq!(Augment::parse("none").unwrap(), Augment::default());
        for (text, says) in [
            ("rotate(10)", "unknown augmentation `rotate`"),
            ("affine(rotation=10)", "no setting `rotation`"),
            ("blur(k=4)", "odd kernel size"),
            ("noise", "needs an amount"),
            ("affine(scale=1.2:0.8)", "LO <= HI"),
            ("flip(p=2)", "p = 2 must be in [0, 1]"),
            ("erase(p=0.5", "closing"),
            ("shift(1.5)", "whole number"),
        ] {
            let e = Augment::parse(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--augment"), "{text}: {e}");
        }
    }

    #[test]
    fn geometry_composes_in_image_order() {
        // A vertical then horizontal flip is a half turn: output (x, y) reads (28-x, 28-y).
        let a = Augment {
            flip: 1.0,
            vflip: 1.0,
            ..Default::default()
        };
        let e = example_reference(&a, 1, 0, 0);
        assert_eq!(&e[..9], &[-1.0, 0.0, 28.0, 0.0, -1.0, 28.0, 0.0, 0.0, 1.0]);
        // The perspective solve maps the four corners where torchvision's coefficients do:
        // identity corners give the identity.
        let c = [[0.0, 0.0], [27.0, 0.0], [27.0, 27.0], [0.0, 27.0]];
        let m = perspective_matrix(&c, &c);
        for (got, want) in m.iter().zip(ID) {
            assert!((got - want).abs() < 1e-5, "{m:?}");
        }
    }
}
