use crate::common::*;
use wgpu_fmnist::kernels::conv2d::{conv2d_forward_reference, Conv2dShape};
use wgpu_fmnist::kernels::conv2d_pool::*;
use wgpu_fmnist::kernels::pool::PoolShape;

fn shapes(n: usize, h: usize, w: usize, co: usize, pad: usize) -> (Conv2dShape, PoolShape) {
    let conv = Conv2dShape {
        n,
        ci: 1,
        h,
        w,
        co,
        kh: 3,
        kw: 3,
        stride: 1,
        pad,
    };
    let pool = PoolShape {
        n,
        c: co,
        h: conv.oh(),
        w: conv.ow(),
        k: 2,
        stride: 2,
    };
    (conv, pool)
}

#[test]
fn conv_relu_maxpool_matches_the_separate_layers() {
    let cases = [
        ("cnn1's first block", shapes(3, 28, 28, 32, 0), true),
        ("padded, 64 channels", shapes(2, 28, 28, 64, 1), true),
        (
            "odd sizes (floor mode), 5 channels",
            shapes(2, 11, 9, 5, 0),
            true,
        ),
        ("no ReLU, padded, batch 1", shapes(1, 12, 14, 7, 1), false),
    ];
    for (i, (why, (conv, pool), relu)) in cases.into_iter().enumerate() {
        assert!(applies(conv, pool), "{why}");
        let mut r = rng(300 + i as u64);
        let x = r.vec(conv.input_len(), -1.0, 1.0);
        let w = r.vec(conv.weight_len(), -0.5, 0.5);
        let b = r.vec(conv.co, -0.2, 0.2);
        let (mut y, mut arg) = (vec![0.0; pool.output_len()], vec![0u32; pool.output_len()]);
        conv2d_relu_maxpool_reference(&mut y, &mut arg, &x, &w, &b, conv, pool, relu);
        let (ty, ta) = (
            zeros("y", pool.output_len()),
            zeros("argmax", pool.output_len()),
        );
        let table = gpu().uniform_table("table", TABLE_LEN).unwrap();
        let d = conv2d_relu_maxpool(
            gpu(),
            conv,
            pool,
            relu,
            &upload("x", &x),
            &upload("w", &w),
            &upload("b", &b),
            &table,
            &ty,
            &ta,
        )
        .unwrap();
        run(&d.iter().collect::<Vec<_>>());
        assert_kernel_close(&format!("{why}: y"), &read(&ty), &y);
        // The argmax (and its ReLU flag) as the pool records it; where two window elements
        // are equal to rounding, either is a right answer.
        let mut c = vec![0.0; conv.output_len()];
        conv2d_forward_reference(&mut c, &x, &w, &b, conv);
        let plane = conv.oh() * conv.ow();
        let got = read_u32(&ta);
        for (o, (&g, &want)) in got.iter().zip(&arg).enumerate() {
            if g == want {
                continue;
            }
            let base = (o / (pool.oh() * pool.ow())) * plane;
            let at = |a: u32| c[base + (a & 0x3fff_ffff) as usize];
            assert!(
                g >> 30 == want >> 30 && (at(g) - at(want)).abs() < 1e-5,
                "{why}: argmax {o}: {g:#x}, want {want:#x}"
            );
        }
        assert!(
            got.iter().zip(&arg).filter(|(g, w)| g != w).count() < 3,
            "{why}"
        );
        if relu {
            assert!(
                got.iter().any(|a| a >> 31 == 1),
                "{why}: some outputs are blocked"
            );
        }
    }
}

#[test]
fn conv_relu_maxpool_refuses_shapes_it_does_not_compute() {
    let (conv, pool) = shapes(1, 10, 10, 4, 0);
    let t = |n| zeros("t", n);
    let table = gpu().uniform_table("table", TABLE_LEN).unwrap();
    let bad = Conv2dShape { ci: 2, ..conv };
    let err = conv2d_relu_maxpool(
        gpu(),
        bad,
        pool,
        true,
        &t(bad.input_len()),
        &t(bad.weight_len()),
        &t(4),
        &table,
        &t(pool.output_len()),
        &t(pool.output_len()),
    )
    .err()
    .expect("two input channels are refused");
    assert!(err.to_string().contains("1-channel"), "{err}");
    assert!(!applies(
        conv,
        PoolShape {
            k: 3,
            stride: 3,
            ..pool
        }
    ));
    assert!(!applies(
        Conv2dShape { co: 65, ..conv },
        PoolShape { c: 65, ..pool }
    ));
}
