//! CPU references of the max pool (PyTorch's semantics).

use super::PoolShape;

pub fn maxpool_forward_reference(y: &mut [f32], argmax: &mut [u32], x: &[f32], s: PoolShape) {
    let (oh, ow) = (s.oh(), s.ow());
    for plane in 0..s.n * s.c {
        let base = plane * s.h * s.w;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut best_i = 0;
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let i = (oy * s.stride + ky) * s.w + ox * s.stride + kx;
                        if x[base + i] > best || (ky == 0 && kx == 0) {
                            best = x[base + i];
                            best_i = i;
                        }
                    }
                }
                let o = (plane * oh + oy) * ow + ox;
                y[o] = best;
                argmax[o] = best_i as u32;
            }
        }
    }
}

pub fn maxpool_backward_reference(dx: &mut [f32], dy: &[f32], argmax: &[u32], s: PoolShape) {
    dx.fill(0.0);
    let plane_out = s.oh() * s.ow();
    for (o, (&g, &a)) in dy.iter().zip(argmax).enumerate() {
        let plane = o / plane_out;
        dx[plane * s.h * s.w + a as usize] += g;
    }
}
