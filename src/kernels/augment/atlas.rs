//! The training images in a texture atlas, where one `textureGather` reads a bilinear
//! footprint and the zero texels between the cells are the zero fill.

use super::PIXELS;
use crate::gpu::{Gpu, GpuError, Result};

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
    pub(super) view: wgpu::TextureView,
    pub(super) sampler: wgpu::Sampler,
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
}
