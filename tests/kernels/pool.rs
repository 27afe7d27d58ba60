use crate::common::*;
use wgpu_fmnist::kernels::pool::*;

fn shapes() -> Vec<(&'static str, PoolShape)> {
    let p = |n, c, h, w, k, stride| PoolShape {
        n,
        c,
        h,
        w,
        k,
        stride,
    };
    vec![
        ("batch 1, one plane, 2x2 exactly", p(1, 1, 2, 2, 2, 2)),
        (
            "odd size: last row/column dropped by floor mode",
            p(2, 3, 7, 5, 2, 2),
        ),
        ("overlapping windows (k 3, stride 2)", p(2, 2, 9, 9, 3, 2)),
        ("stride 1", p(1, 2, 6, 6, 2, 1)),
        (
            "stride past the window: inputs in no window get 0",
            p(1, 2, 8, 8, 2, 3),
        ),
        (
            "3x3 windows tiling a 9x10 image, one column left over",
            p(2, 3, 9, 10, 3, 3),
        ),
        ("regcnn pool1 (32x26x26)", p(2, 32, 26, 26, 2, 2)),
        ("regcnn pool2 (64x11x11, odd)", p(32, 64, 11, 11, 2, 2)),
        ("cnn2 pool3 (128x7x7)", p(2, 128, 7, 7, 2, 2)),
        ("vgg pool1 (64x28x28)", p(2, 64, 28, 28, 2, 2)),
    ]
}

/// Distinct values (a shuffled ramp) so the argmax is unique and finite differences are exact.
fn distinct(len: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len)
        .map(|i| i as f32 * 0.05 - len as f32 * 0.025)
        .collect();
    rng(seed).shuffle(&mut v);
    v
}

#[test]
fn maxpool_forward_matches_reference() {
    for (i, (why, s)) in shapes().into_iter().enumerate() {
        let x = rng(i as u64).vec(s.input_len(), -1.0, 1.0);
        let (tx, ty, ta) = (
            upload("x", &x),
            zeros("y", s.output_len()),
            zeros("argmax", s.output_len()),
        );
        run(&[&maxpool_forward(gpu(), s, &tx, &ty, &ta).unwrap()]);
        let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
        maxpool_forward_reference(&mut y, &mut a, &x, s);
        assert_kernel_close(
            &format!("maxpool_forward {} ({why})", s.describe()),
            &read(&ty),
            &y,
        );
        assert_eq!(read_u32(&ta), a, "maxpool argmax {} ({why})", s.describe());
    }
}

#[test]
fn maxpool_forward_breaks_ties_like_pytorch() {
    // All equal: PyTorch reports the first element of each window.
    let s = PoolShape {
        n: 1,
        c: 1,
        h: 4,
        w: 4,
        k: 2,
        stride: 2,
    };
    let (tx, ty, ta) = (upload("x", &[1.0; 16]), zeros("y", 4), zeros("argmax", 4));
    run(&[&maxpool_forward(gpu(), s, &tx, &ty, &ta).unwrap()]);
    assert_eq!(read_u32(&ta), vec![0, 2, 8, 10]);
}

#[test]
fn maxpool_backward_matches_reference() {
    for (i, (why, s)) in shapes().into_iter().enumerate() {
        let x = rng(20 + i as u64).vec(s.input_len(), -1.0, 1.0);
        let dy = rng(40 + i as u64).vec(s.output_len(), -1.0, 1.0);
        let (tx, ty, ta) = (
            upload("x", &x),
            zeros("y", s.output_len()),
            zeros("argmax", s.output_len()),
        );
        let (tdy, tdx) = (upload("dy", &dy), zeros("dx", s.input_len()));
        run(&[
            &maxpool_forward(gpu(), s, &tx, &ty, &ta).unwrap(),
            &maxpool_backward(gpu(), s, &tdy, &ta, &tdx).unwrap(),
        ]);
        let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
        maxpool_forward_reference(&mut y, &mut a, &x, s);
        let mut dx = vec![0.0; s.input_len()];
        maxpool_backward_reference(&mut dx, &dy, &a, s);
        assert_kernel_close(
            &format!("maxpool_backward {} ({why})", s.describe()),
            &read(&tdx),
            &dx,
        );
    }
}

#[test]
fn maxpool_backward_reference_matches_finite_differences() {
    for s in [
        PoolShape {
            n: 1,
            c: 2,
            h: 5,
            w: 5,
            k: 2,
            stride: 2,
        },
        PoolShape {
            n: 1,
            c: 1,
            h: 7,
            w: 7,
            k: 3,
            stride: 2,
        },
    ] {
        let x = distinct(s.input_len(), 5);
        let dy = rng(6).vec(s.output_len(), -1.0, 1.0);
        let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
        maxpool_forward_reference(&mut y, &mut a, &x, s);
        let mut dx = vec![0.0; s.input_len()];
        maxpool_backward_reference(&mut dx, &dy, &a, s);
        check_gradient(
            &format!("maxpool {}", s.describe()),
            &x,
            &dx,
            &dy,
            s.input_len(),
            1e-2,
            1e-4,
            |x| {
                let (mut y, mut a) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
                maxpool_forward_reference(&mut y, &mut a, x, s);
                y
            },
        );
    }
}
