//! The CPU reference of the augmented gather: the sampled, transformed and normalised
//! pixels of a batch, from `draws`, to compare the GPU kernels with.

use super::draws::{normal, quantized};
use super::{example_reference, Augment, GatherConfig, PIXELS, SIDE};

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
