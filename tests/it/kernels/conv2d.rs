#![allow(clippy::too_many_arguments)]

use crate::common::*;
use wgpu_fmnist::kernels::conv2d::*;
use wgpu_fmnist::kernels::elementwise::relu_forward_reference;

fn shape(
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        ci,
        h,
        w,
        co,
        kh: k,
        kw: k,
        stride,
        pad,
    }
}

/// Shapes with the reason each is here.
fn shapes() -> Vec<(&'static str, Conv2dShape)> {
    vec![
        (
            "smallest: one channel, one 3x3 output",
            shape(1, 1, 3, 3, 1, 3, 1, 0),
        ),
        (
            "stride 2, pad 1, odd non-square image, channels off the block of 4",
            shape(2, 3, 7, 9, 5, 3, 2, 1),
        ),
        (
            "stride larger than the kernel (inputs no output reads)",
            shape(1, 2, 8, 8, 3, 2, 3, 0),
        ),
        ("5x5 kernel with pad 2", shape(2, 3, 8, 8, 6, 5, 1, 2)),
        (
            "3x3 pad 2: fast path with the largest padding, 9 output channels",
            shape(3, 2, 5, 11, 9, 3, 1, 2),
        ),
        (
            "3x3 on a 3x3 image: one output column, far from the 8-column block",
            shape(2, 5, 3, 3, 3, 3, 1, 0),
        ),
        (
            "regcnn/cnn1 conv1, batch 1",
            shape(1, 1, 28, 28, 32, 3, 1, 0),
        ),
        ("regcnn/cnn1 conv2", shape(2, 32, 13, 13, 64, 3, 1, 0)),
        (
            "regcnn conv2 at its batch of 32",
            shape(32, 32, 13, 13, 64, 3, 1, 0),
        ),
        ("cnn2 conv1 (pad 1)", shape(2, 1, 28, 28, 32, 3, 1, 1)),
        ("cnn2 conv2", shape(2, 32, 14, 14, 64, 3, 1, 1)),
        ("cnn2 conv3 (7x7 input)", shape(2, 64, 7, 7, 128, 3, 1, 1)),
        (
            "vgg conv2 (64->64 at 28x28)",
            shape(1, 64, 28, 28, 64, 3, 1, 1),
        ),
        (
            "vgg conv3 (64->128 at 14x14)",
            shape(1, 64, 14, 14, 128, 3, 1, 1),
        ),
        (
            "vgg conv4 (128->128 at 14x14)",
            shape(1, 128, 14, 14, 128, 3, 1, 1),
        ),
    ]
}

fn data(s: Conv2dShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = rng(seed);
    let bound = 1.0 / ((s.ci * s.kh * s.kw) as f32).sqrt();
    (
        r.vec(s.input_len(), -1.0, 1.0),
        r.vec(s.weight_len(), -bound, bound),
        r.vec(s.co, -bound, bound),
        r.vec(s.output_len(), -1.0, 1.0),
    )
}

/// Every variant that applies to the shape on this adapter (`select::conv2d`; the subgroup
/// one where subgroups are 8 wide, as on lavapipe in CI).
fn variants(s: &Conv2dShape) -> Vec<Variant> {
    wgpu_fmnist::kernels::select::conv2d::applicable(&gpu().caps, s)
}

fn run_all(d: Vec<wgpu_fmnist::gpu::Dispatch>) {
    run(&d.iter().collect::<Vec<_>>());
}

#[test]
fn conv2d_forward_matches_reference() {
    for (i, (why, s)) in shapes().into_iter().enumerate() {
        let (x, w, b, _) = data(s, i as u64);
        let mut want = vec![0.0; s.output_len()];
        conv2d_forward_reference(&mut want, &x, &w, &b, s);
        for v in variants(&s) {
            let (tx, tw, tb, ty) = (
                upload("x", &x),
                upload("w", &w),
                upload("b", &b),
                zeros("y", s.output_len()),
            );
            run_all(conv2d_forward_with(gpu(), v, s, &tx, &tw, &tb, &ty).unwrap());
            assert_kernel_close(
                &format!("conv2d_forward {v:?} {} ({why})", s.describe()),
                &read(&ty),
                &want,
            );
        }
    }
}

#[test]
fn conv2d_relu_forward_matches_reference() {
    // The ReLU applied as y is stored, by every variant (the 3x3 ones with their own
    // packing and with the step's packer).
    let (mut zeroed, mut kept) = (0, 0);
    for (i, (why, s)) in shapes().into_iter().enumerate() {
        let (x, w, b, _) = data(s, 70 + i as u64);
        let mut conv = vec![0.0; s.output_len()];
        conv2d_forward_reference(&mut conv, &x, &w, &b, s);
        let mut want = vec![0.0; s.output_len()];
        relu_forward_reference(&mut want, &conv);
        zeroed += want.iter().filter(|&&v| v == 0.0).count();
        kept += want.iter().filter(|&&v| v > 0.0).count();
        for v in variants(&s) {
            let (tx, tb) = (upload("x", &x), upload("b", &b));
            let arena = gpu().arena("w", &[("w".to_string(), w.len())]).unwrap();
            gpu().write(&arena.slices[0], &w).unwrap();
            let (ty, ty_packed) = (zeros("y", s.output_len()), zeros("y", s.output_len()));
            let tw = &arena.slices[0];
            run_all(conv2d_relu_forward_with(gpu(), v, s, &tx, tw, &tb, &ty).unwrap());
            let lens = [s.ci * 9 * s.co.next_multiple_of(32)];
            let mut packer = WeightPacker::new(gpu(), &arena.whole, &lens)
                .unwrap()
                .unwrap();
            let plan =
                conv2d_forward_packed(gpu(), v, s, &tx, tw, &tb, &ty_packed, true, &mut packer);
            let mut plan = plan.unwrap();
            if let Some(pack) = packer.dispatch(gpu()).unwrap() {
                plan.insert(0, pack);
            }
            run_all(plan);
            for (got, how) in [(&ty, "own packing"), (&ty_packed, "packer")] {
                assert_kernel_close(
                    &format!("conv2d relu forward {v:?} {how} {} ({why})", s.describe()),
                    &read(got),
                    &want,
                );
            }
        }
    }
    assert!(zeroed > 100 && kept > 100, "{zeroed} zeroed, {kept} kept");
}

#[test]
fn conv2d_backward_matches_reference() {
    for (i, (why, s)) in shapes().into_iter().enumerate() {
        let (x, w, _, dy) = data(s, 50 + i as u64);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; s.co]);
        conv2d_backward_reference(&mut dx, &mut dw, &mut db, &dy, &x, &w, s);
        let d = s.describe();
        for v in variants(&s) {
            let (tx, tw, tdy) = (upload("x", &x), upload("w", &w), upload("dy", &dy));
            let (tdx, tdw, tdb) = (
                zeros("dx", x.len()),
                zeros("dw", w.len()),
                zeros("db", s.co),
            );
            let mut all = conv2d_backward_input_with(gpu(), v, s, &tdy, &tw, &tdx).unwrap();
            all.extend(conv2d_backward_weight_with(gpu(), v, s, &tdy, &tx, &tdw).unwrap());
            all.push(conv2d_backward_bias(gpu(), s, &tdy, &tdb).unwrap());
            run_all(all);
            assert_kernel_close(
                &format!("conv2d_backward_input {v:?} {d} ({why})"),
                &read(&tdx),
                &dx,
            );
            assert_kernel_close(
                &format!("conv2d_backward_weight {v:?} {d} ({why})"),
                &read(&tdw),
                &dw,
            );
            assert_kernel_close(
                &format!("conv2d_backward_bias {d} ({why})"),
                &read(&tdb),
                &db,
            );
            // The bias gradient in the weight gradient's dispatches: both bit for bit.
            let (tdw2, tdb2) = (zeros("dw", w.len()), zeros("db", s.co));
            let fused = conv2d_backward_weight_bias_with(gpu(), v, s, &tdy, &tx, &tdw2, &tdb2);
            let fused = fused.unwrap();
            let alone = conv2d_backward_weight_with(gpu(), v, s, &tdy, &tx, &tdw).unwrap();
            assert_eq!(
                fused.len(),
                alone.len() + (v == Variant::Generic) as usize,
                "{v:?}"
            );
            run_all(fused);
            assert_eq!(read(&tdw2), read(&tdw), "{v:?} {d}: dw beside db");
            if v == Variant::Tiled {
                // A column of the weight gradient's product: its own order of summation.
                let what = format!("conv2d_backward_weight_bias {v:?} {d} ({why}): db");
                assert_kernel_close(&what, &read(&tdb2), &db);
            } else {
                assert_eq!(read(&tdb2), read(&tdb), "{v:?} {d}: db beside dw");
            }
        }
    }
}

/// Two convolutions whose weights are slices of one arena, forward and backward to the
/// input, with their weights packed by one `WeightPacker` dispatch: bit for bit what the
/// same variant computes packing its own weights, for every variant (those without a
/// packed path must leave the packer unused).
#[test]
fn weights_packed_in_one_dispatch_match_each_convolution_packing_its_own() {
    let shapes = [
        shape(2, 3, 7, 9, 5, 3, 1, 1),
        shape(3, 8, 6, 5, 40, 3, 1, 0),
    ];
    let lens: Vec<(String, usize)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("w{i}"), s.weight_len()))
        .collect();
    for v in variants(&shapes[0]) {
        let arena = gpu().arena("weights", &lens).unwrap();
        let room: Vec<usize> = shapes
            .iter()
            .flat_map(|s| [s.ci * 9 * 64, s.co * 9 * 64])
            .collect();
        let mut packer = WeightPacker::new(gpu(), &arena.whole, &room)
            .unwrap()
            .expect("fits");
        let (mut packed, mut own, mut outs) = (vec![], vec![], vec![]);
        for (i, s) in shapes.iter().enumerate() {
            let (x, w, b, dy) = data(*s, 40 + i as u64);
            gpu().write(&arena.slices[i], &w).unwrap();
            let (tx, tw, tb, tdy) = (
                upload("x", &x),
                upload("w", &w),
                upload("b", &b),
                upload("dy", &dy),
            );
            let ys = [zeros("y", s.output_len()), zeros("y", s.output_len())];
            let dxs = [zeros("dx", s.input_len()), zeros("dx", s.input_len())];
            let w_slice = &arena.slices[i];
            packed.extend(
                conv2d_forward_packed(gpu(), v, *s, &tx, w_slice, &tb, &ys[0], false, &mut packer)
                    .unwrap(),
            );
            packed.extend(
                conv2d_backward_input_packed(gpu(), v, *s, &tdy, w_slice, &dxs[0], &mut packer)
                    .unwrap(),
            );
            own.extend(conv2d_forward_with(gpu(), v, *s, &tx, &tw, &tb, &ys[1]).unwrap());
            own.extend(conv2d_backward_input_with(gpu(), v, *s, &tdy, &tw, &dxs[1]).unwrap());
            outs.push((ys, dxs));
        }
        let pack = packer.dispatch(gpu()).unwrap();
        let three_by_three = matches!(v, Variant::Conv3x3 | Variant::Subgroup);
        assert_eq!(pack.is_some(), three_by_three, "{v:?}: a pack dispatch");
        // The packer took every packing: each convolution is one dispatch.
        assert_eq!(packed.len(), 4, "{v:?}");
        let mut all: Vec<_> = pack.into_iter().collect();
        all.extend(packed);
        all.extend(own);
        run_all(all);
        for (i, (ys, dxs)) in outs.iter().enumerate() {
            assert_eq!(read(&ys[0]), read(&ys[1]), "{v:?} forward {i}");
            assert_eq!(read(&dxs[0]), read(&dxs[1]), "{v:?} input gradient {i}");
            assert!(read(&ys[0]).iter().any(|&y| y != 0.0), "{v:?} forward {i}");
        }
    }
}

#[test]
fn conv2d_fast_variants_refuse_other_shapes() {
    let s = shape(1, 2, 7, 7, 3, 3, 2, 1);
    let (x, w, b, y) = (
        zeros("x", s.input_len()),
        zeros("w", s.weight_len()),
        zeros("b", s.co),
        zeros("y", s.output_len()),
    );
    for v in [Variant::Conv3x3, Variant::Subgroup] {
        let err = conv2d_forward_with(gpu(), v, s, &x, &w, &b, &y)
            .err()
            .unwrap_or_else(|| panic!("{v:?} accepted stride 2"));
        assert!(err.to_string().contains("stride 2"), "{err}");
    }
}

#[test]
fn conv2d_backward_reference_matches_finite_differences() {
    for s in [shape(2, 2, 5, 6, 3, 3, 1, 1), shape(1, 2, 7, 7, 2, 3, 2, 1)] {
        let (x, w, b, dy) = data(s, 77);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; s.co]);
        conv2d_backward_reference(&mut dx, &mut dw, &mut db, &dy, &x, &w, s);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; s.output_len()];
            conv2d_forward_reference(&mut y, x, w, b, s);
            y
        };
        let d = s.describe();
        check_gradient(
            &format!("conv2d dx {d}"),
            &x,
            &dx,
            &dy,
            40,
            1e-2,
            1e-3,
            |x| fwd(x, &w, &b),
        );
        check_gradient(
            &format!("conv2d dw {d}"),
            &w,
            &dw,
            &dy,
            40,
            1e-2,
            1e-3,
            |w| fwd(&x, w, &b),
        );
        check_gradient(
            &format!("conv2d db {d}"),
            &b,
            &db,
            &dy,
            s.co,
            1e-2,
            1e-3,
            |b| fwd(&x, &w, b),
        );
    }
}
