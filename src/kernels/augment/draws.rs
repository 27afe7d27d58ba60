//! The per-example draws on the CPU, in the same f32 arithmetic as `augment_params`: the
//! homography and the photometric factors of each example, from the counter hash.

use super::{Augment, PER_EXAMPLE, SIDE};
use crate::kernels::dropout::hash;

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
pub(super) fn normal(seed: u32, step: u32, b: u32, px: u32) -> f32 {
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
pub(super) fn quantized(x: f32) -> f32 {
    (x.clamp(0.0, 1.0) * 65535.0 + 0.5).floor() / 65535.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
