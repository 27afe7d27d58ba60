//! The CPU reference of the convolution kernels (f64 accumulation), which the tests and
//! `bench`'s validation compare every variant to.

use super::Conv2dShape;

/// Input index of output (oy, ox) through tap (ky, kx), or None in the padding.
fn tap(s: &Conv2dShape, o: usize, k: usize, size: usize) -> Option<usize> {
    let i = (o * s.stride + k) as isize - s.pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

pub fn conv2d_forward_reference(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], s: Conv2dShape) {
    let (oh, ow) = (s.oh(), s.ow());
    for n in 0..s.n {
        for co in 0..s.co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co] as f64;
                    for ci in 0..s.ci {
                        for ky in 0..s.kh {
                            let Some(iy) = tap(&s, oy, ky, s.h) else {
                                continue;
                            };
                            for kx in 0..s.kw {
                                let Some(ix) = tap(&s, ox, kx, s.w) else {
                                    continue;
                                };
                                acc += x[((n * s.ci + ci) * s.h + iy) * s.w + ix] as f64
                                    * w[((co * s.ci + ci) * s.kh + ky) * s.kw + kx] as f64;
                            }
                        }
                    }
                    y[((n * s.co + co) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
}

/// Gradients of the convolution: dx, dw, db (all overwritten).
pub fn conv2d_backward_reference(
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    s: Conv2dShape,
) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut gx = vec![0f64; dx.len()];
    let mut gw = vec![0f64; dw.len()];
    let mut gb = vec![0f64; db.len()];
    for n in 0..s.n {
        for co in 0..s.co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.co + co) * oh + oy) * ow + ox] as f64;
                    gb[co] += g;
                    for ci in 0..s.ci {
                        for ky in 0..s.kh {
                            let Some(iy) = tap(&s, oy, ky, s.h) else {
                                continue;
                            };
                            for kx in 0..s.kw {
                                let Some(ix) = tap(&s, ox, kx, s.w) else {
                                    continue;
                                };
                                let xi = ((n * s.ci + ci) * s.h + iy) * s.w + ix;
                                let wi = ((co * s.ci + ci) * s.kh + ky) * s.kw + kx;
                                gx[xi] += g * w[wi] as f64;
                                gw[wi] += g * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    for (o, v) in dx.iter_mut().zip(gx) {
        *o = v as f32;
    }
    for (o, v) in dw.iter_mut().zip(gw) {
        *o = v as f32;
    }
    for (o, v) in db.iter_mut().zip(gb) {
        *o = v as f32;
    }
}
