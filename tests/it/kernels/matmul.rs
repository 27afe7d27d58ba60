use crate::common::*;
use wgpu_fmnist::kernels::matmul::*;

/// (batch, inputs, outputs) with the reason each is here.
const LINEAR_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),        // smallest
    (1, 784, 128),    // batch 1, mlp first layer
    (3, 5, 7),        // nothing a multiple of the 4x4 block or 32 tile
    (33, 67, 31),     // one past / one short of tile multiples
    (33, 36, 31),     // the same where the NT kernels apply (32-row subgroup tiles)
    (9, 36, 20),      // vec4 layouts with partial 8-row / 8-column blocks
    (70, 132, 68),    // vec4 layouts just past the 64-wide workgroup tiles
    (32, 784, 128),   // mlp layer 1 at its batch
    (32, 128, 64),    // mlp layer 2
    (32, 64, 10),     // mlp layer 3
    (32, 1600, 128),  // cnn1 / regcnn first linear
    (128, 1600, 128), // the same at batch 128 (bench target shape)
    (32, 128, 10),    // every CNN's classifier
    (5, 1152, 128),   // cnn2 first linear
    (3, 6272, 640),   // vgg first linear
    (3, 640, 10),     // vgg classifier
    (300, 20, 12),    // a long batch: split-K weight gradient, the bias's row sums beside it
];

fn data(s: LinearShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let bound = 1.0 / (s.inputs as f32).sqrt();
    (
        r.vec(s.batch * s.inputs, -1.0, 1.0),
        r.vec(s.outputs * s.inputs, -bound, bound),
        r.vec(s.outputs, -bound, bound),
        r.vec(s.batch * s.outputs, -1.0, 1.0),
    )
}

/// Every variant that applies to the product on this adapter (`select::matmul`): the
/// strided and tiled kernels, the vec4 and subgroup ones where the layout (and, for
/// subgroups, the adapter) allows them.
fn variants(shape: &MatmulShape, bias: bool) -> Vec<Variant> {
    wgpu_fmnist::kernels::select::matmul::applicable(&gpu().caps, shape, bias)
}

#[test]
fn linear_forward_matches_reference() {
    for (i, &(batch, inputs, outputs)) in LINEAR_SHAPES.iter().enumerate() {
        let s = LinearShape {
            batch,
            inputs,
            outputs,
        };
        let (x, w, b, _) = data(s, i as u64);
        let mut want = vec![0.0; batch * outputs];
        linear_forward_reference(&mut want, &x, &w, &b, s);
        for v in variants(&s.forward(), true) {
            let (tx, tw, tb, ty) = (
                upload("x", &x),
                upload("w", &w),
                upload("b", &b),
                zeros("y", batch * outputs),
            );
            run_lists(&[linear_forward_with(gpu(), v, s, &tx, &tw, &tb, &ty).unwrap()]);
            assert_kernel_close(&format!("linear_forward {v:?} {s:?}"), &read(&ty), &want);
        }
    }
}

#[test]
fn linear_backward_matches_reference() {
    for (i, &(batch, inputs, outputs)) in LINEAR_SHAPES.iter().enumerate() {
        let s = LinearShape {
            batch,
            inputs,
            outputs,
        };
        let (x, w, _, dy) = data(s, 100 + i as u64);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; outputs]);
        linear_backward_reference(&mut dx, &mut dw, &mut db, &dy, &x, &w, s);
        let (tx, tw, tdy) = (upload("x", &x), upload("w", &w), upload("dy", &dy));
        for v in variants(&s.backward_input(), false) {
            let tdx = zeros("dx", x.len());
            run_lists(&[linear_backward_input_with(gpu(), v, s, &tdy, &tw, &tdx).unwrap()]);
            assert_kernel_close(&format!("linear_backward dx {v:?} {s:?}"), &read(&tdx), &dx);
        }
        // db rides in the weight gradient's dispatch: dw must be exactly the plain
        // product's, db the batch sum in order (bit for bit) and close to the reference.
        let mut db_in_order = vec![0.0; outputs];
        linear_bias_gradient_in_order(&mut db_in_order, &dy, s);
        for v in variants(&s.backward_weight(), false) {
            let (plain, tdw, tdb) = (
                zeros("dw", w.len()),
                zeros("dw", w.len()),
                zeros("db", outputs),
            );
            run_lists(&[
                linear_backward_weight_with(gpu(), v, s, &tdy, &tx, &plain).unwrap(),
                linear_backward_weight_bias_with(gpu(), v, s, &tdy, &tx, &tdw, &tdb).unwrap(),
            ]);
            let what = format!("linear_backward {v:?} {s:?}");
            assert_kernel_close(&format!("{what} dw"), &read(&tdw), &dw);
            assert_eq!(read(&tdw), read(&plain), "{what} dw with db");
            assert_kernel_close(&format!("{what} db"), &read(&tdb), &db);
            assert_eq!(read(&tdb), db_in_order, "{what} db order");
        }
    }
}

/// The ReLU epilogues against the reference, and bit for bit against the plain product of
/// the same variant followed by the ReLU (what the unfused steps compute).
#[test]
fn linear_relu_epilogues_match_reference_and_the_unfused_kernels() {
    for (i, &(batch, inputs, outputs)) in LINEAR_SHAPES.iter().enumerate() {
        let s = LinearShape {
            batch,
            inputs,
            outputs,
        };
        let (x, w, b, dy) = data(s, 200 + i as u64);
        let mut y = vec![0.0; batch * outputs];
        linear_forward_reference(&mut y, &x, &w, &b, s);
        let relu: Vec<f32> = y.iter().map(|v| v.max(0.0)).collect();
        let (tx, tw, tb) = (upload("x", &x), upload("w", &w), upload("b", &b));
        for v in variants(&s.forward(), true) {
            let (plain, fused) = (zeros("y", y.len()), zeros("relu y", y.len()));
            run_lists(&[
                linear_forward_with(gpu(), v, s, &tx, &tw, &tb, &plain).unwrap(),
                linear_relu_forward_with(gpu(), v, s, &tx, &tw, &tb, &fused).unwrap(),
            ]);
            let got = read(&fused);
            assert_kernel_close(&format!("linear_relu_forward {v:?} {s:?}"), &got, &relu);
            let unfused: Vec<f32> = read(&plain).iter().map(|v| v.max(0.0)).collect();
            assert_eq!(got, unfused, "linear_relu_forward {v:?} {s:?}");
            // Both sides of the ReLU are exercised (shapes with a few outputs at least).
            let both = got.contains(&0.0) && got.iter().any(|&v| v > 0.0);
            assert!(both || got.len() < 16, "{v:?} {s:?}: {got:?}");
        }
        // The mask: a ReLU's output over this layer's input (about half zeros).
        let mut r = rng(300 + i as u64);
        let mask: Vec<f32> = r
            .vec(x.len(), -1.0, 1.0)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; outputs]);
        linear_backward_reference(&mut dx, &mut dw, &mut db, &dy, &x, &w, s);
        let masked: Vec<f32> = dx
            .iter()
            .zip(&mask)
            .map(|(&g, &m)| if m > 0.0 { g } else { 0.0 })
            .collect();
        let (tdy, tmask) = (upload("dy", &dy), upload("mask", &mask));
        for v in variants(&s.backward_input(), false) {
            let (plain, fused) = (zeros("dx", x.len()), zeros("masked dx", x.len()));
            run_lists(&[
                linear_backward_input_with(gpu(), v, s, &tdy, &tw, &plain).unwrap(),
                linear_backward_input_relu_with(gpu(), v, s, &tdy, &tw, &tmask, &fused).unwrap(),
            ]);
            let got = read(&fused);
            let what = format!("linear_backward_input_relu {v:?} {s:?}");
            assert_kernel_close(&what, &got, &masked);
            let unfused: Vec<f32> = read(&plain)
                .iter()
                .zip(&mask)
                .map(|(&g, &m)| if m > 0.0 { g } else { 0.0 })
                .collect();
            assert_eq!(got, unfused, "{what}");
        }
    }
}

#[test]
fn matmul_strided_matches_reference() {
    // A stored transposed and B with a row pitch wider than its columns: the general path;
    // then the same layouts with a K long enough for split-K.
    for (m, n, k) in [(13, 9, 21), (13, 9, 700)] {
        let s = MatmulShape {
            m,
            n,
            k,
            a_stride: (1, m),
            b_stride: (n + 3, 1),
        };
        let mut r = rng(3);
        let a = r.vec(m * k, -1.0, 1.0);
        let b = r.vec(k * (n + 3), -1.0, 1.0);
        let mut want = vec![0.0; m * n];
        matmul_reference(&mut want, &a, &b, s);
        let vs = variants(&s, false);
        assert_eq!(vs.contains(&Variant::SplitK), k > 256, "{s:?}: {vs:?}");
        for v in vs {
            let (ta, tb, tc) = (upload("a", &a), upload("b", &b), zeros("c", m * n));
            run_lists(&[matmul_with(gpu(), v, s, &ta, &tb, None, &tc).unwrap()]);
            assert_kernel_close(
                &format!("matmul strided view {v:?} {s:?}"),
                &read(&tc),
                &want,
            );
        }
    }
}

#[test]
fn linear_backward_reference_matches_finite_differences() {
    let s = LinearShape {
        batch: 3,
        inputs: 7,
        outputs: 5,
    };
    let (x, w, b, dy) = data(s, 9);
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; 5]);
    linear_backward_reference(&mut dx, &mut dw, &mut db, &dy, &x, &w, s);
    let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut y = vec![0.0; s.batch * s.outputs];
        linear_forward_reference(&mut y, x, w, b, s);
        y
    };
    check_gradient("linear dx", &x, &dx, &dy, x.len(), 1e-2, 1e-3, |x| {
        fwd(x, &w, &b)
    });
    check_gradient("linear dw", &w, &dw, &dy, w.len(), 1e-2, 1e-3, |w| {
        fwd(&x, w, &b)
    });
    check_gradient("linear db", &b, &db, &dy, b.len(), 1e-2, 1e-3, |b| {
        fwd(&x, &w, b)
    });
}
