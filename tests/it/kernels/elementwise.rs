use crate::common::*;
use wgpu_fmnist::kernels::elementwise::*;

// 1: single element; 255/257: around the 256 workgroup; 32*32*26*26: regcnn conv1 output.
const SIZES: &[usize] = &[1, 255, 257, 4099, 32 * 32 * 26 * 26];

#[test]
fn relu_forward_matches_reference() {
    for &n in SIZES {
        let x = rng(n as u64).vec(n, -1.0, 1.0);
        let (tx, ty) = (upload("x", &x), zeros("y", n));
        run(&[&relu_forward(gpu(), &tx, &ty, n).unwrap()]);
        let mut want = vec![0.0; n];
        relu_forward_reference(&mut want, &x);
        assert_kernel_close(&format!("relu_forward n={n}"), &read(&ty), &want);
    }
}

#[test]
fn relu_backward_matches_reference() {
    for &n in SIZES {
        let mut r = rng(n as u64 + 1);
        let (x, dy) = (r.vec(n, -1.0, 1.0), r.vec(n, -1.0, 1.0));
        let (tx, tdy, tdx) = (upload("x", &x), upload("dy", &dy), zeros("dx", n));
        run(&[&relu_backward(gpu(), &tx, &tdy, &tdx, n).unwrap()]);
        let mut want = vec![0.0; n];
        relu_backward_reference(&mut want, &dy, &x);
        assert_kernel_close(&format!("relu_backward n={n}"), &read(&tdx), &want);
    }
}

#[test]
fn relu_backward_reference_matches_finite_differences() {
    let mut r = rng(7);
    // Keep inputs away from the kink at 0 so the central difference is exact.
    let x: Vec<f32> = r
        .vec(200, 0.05, 1.0)
        .into_iter()
        .enumerate()
        .map(|(i, v)| if i % 2 == 0 { v } else { -v })
        .collect();
    let w = r.vec(200, -1.0, 1.0);
    let mut dx = vec![0.0; 200];
    relu_backward_reference(&mut dx, &w, &x);
    check_gradient("relu", &x, &dx, &w, 200, 1e-2, 1e-4, |x| {
        let mut y = vec![0.0; x.len()];
        relu_forward_reference(&mut y, x);
        y
    });
}
