use crate::common::*;
use wgpu_fmnist::kernels::dropout::*;

fn cfg(n: usize, p: f32, seed: u32, layer: u32) -> DropoutConfig {
    DropoutConfig { n, p, seed, layer }
}

#[test]
fn dropout_forward_matches_reference() {
    // Odd sizes around the 256 workgroup, and regcnn's dropout after conv1 (32x26x26, batch 2).
    for (i, &(n, p)) in [
        (1, 0.5),
        (257, 0.2),
        (1000, 0.0),
        (2 * 32 * 26 * 26, 0.2),
        (4099, 0.9),
    ]
    .iter()
    .enumerate()
    {
        let c = cfg(n, p, 1234, i as u32);
        let x = rng(i as u64).vec(n, -1.0, 1.0);
        let counter = upload_u32("counter", &[17]);
        let (tx, ty) = (upload("x", &x), zeros("y", n));
        run(&[&dropout_forward(gpu(), c, &counter, &tx, &ty).unwrap()]);
        let mut want = vec![0.0; n];
        dropout_forward_reference(&mut want, &x, c, 17);
        // The mask is bit-identical (integer hash), and the scaling is one f32 multiply.
        assert_close(
            &format!("dropout_forward n={n} p={p}"),
            &read(&ty),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn dropout_backward_matches_reference() {
    for (i, &(n, p)) in [(3, 0.5), (513, 0.25), (2 * 128 * 7 * 7, 0.5)]
        .iter()
        .enumerate()
    {
        let c = cfg(n, p, 99, 3 + i as u32);
        let dy = rng(10 + i as u64).vec(n, -1.0, 1.0);
        let counter = upload_u32("counter", &[5]);
        let (tdy, tdx) = (upload("dy", &dy), zeros("dx", n));
        run(&[&dropout_backward(gpu(), c, &counter, &tdy, &tdx).unwrap()]);
        let mut want = vec![0.0; n];
        dropout_backward_reference(&mut want, &dy, c, 5);
        assert_close(
            &format!("dropout_backward n={n} p={p}"),
            &read(&tdx),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn dropout_keeps_one_minus_p_of_elements() {
    let n = 200_000;
    for p in [0.1f32, 0.25, 0.5, 0.9] {
        let c = cfg(n, p, 7, 1);
        let counter = upload_u32("counter", &[0]);
        let (tx, ty) = (upload("x", &vec![1.0; n]), zeros("y", n));
        run(&[&dropout_forward(gpu(), c, &counter, &tx, &ty).unwrap()]);
        let y = read(&ty);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64;
        let expected = n as f64 * (1.0 - p as f64);
        let sigma = (n as f64 * p as f64 * (1.0 - p as f64)).sqrt();
        assert!(
            (kept - expected).abs() < 5.0 * sigma,
            "p={p}: kept {kept}, expected {expected} +- {}",
            5.0 * sigma
        );
        // Kept elements are scaled by 1/(1-p) (inverted dropout), so the mean is preserved.
        let scale = 1.0 / (1.0 - p);
        assert!(
            y.iter().all(|&v| v == 0.0 || v == scale),
            "p={p}: values other than 0 and {scale}"
        );
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!(
            (mean - 1.0).abs() < 5.0 * sigma * scale as f64 / n as f64,
            "p={p}: mean {mean}"
        );
    }
}

#[test]
fn dropout_masks_repeat_per_step_and_differ_across_steps_and_layers() {
    let n = 10_000;
    let x = upload("x", &vec![1.0; n]);
    let mask = |seed: u32, step: u32, layer: u32| -> Vec<bool> {
        let counter = upload_u32("counter", &[step]);
        let y = zeros("y", n);
        run(&[&dropout_forward(gpu(), cfg(n, 0.5, seed, layer), &counter, &x, &y).unwrap()]);
        read(&y).iter().map(|&v| v != 0.0).collect()
    };
    let a = mask(1, 3, 0);
    assert_eq!(
        a,
        mask(1, 3, 0),
        "same seed, step and layer must give the same mask"
    );
    let agree = |b: &[bool]| a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64;
    // Independent masks with p = 0.5 agree on about half the elements.
    for (what, other) in [
        ("step", mask(1, 4, 0)),
        ("layer", mask(1, 3, 1)),
        ("seed", mask(2, 3, 0)),
    ] {
        let f = agree(&other);
        assert!(
            (f - 0.5).abs() < 0.05,
            "changing the {what} should give an independent mask, agreement {f}"
        );
    }
}

#[test]
fn dropout_backward_reference_matches_finite_differences() {
    let c = cfg(300, 0.3, 11, 2);
    let x = rng(1).vec(300, -1.0, 1.0);
    let w = rng(2).vec(300, -1.0, 1.0);
    let mut dx = vec![0.0; 300];
    dropout_backward_reference(&mut dx, &w, c, 8);
    check_gradient("dropout", &x, &dx, &w, 300, 1e-2, 1e-4, |x| {
        let mut y = vec![0.0; x.len()];
        dropout_forward_reference(&mut y, x, c, 8);
        y
    });
}
