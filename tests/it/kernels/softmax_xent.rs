use crate::common::*;
use wgpu_fmnist::kernels::softmax_xent::*;

fn data(s: XentShape, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = rng(seed);
    let logits = r.vec(s.batch * s.classes, -4.0, 4.0);
    let labels = (0..s.batch).map(|_| r.below(s.classes) as u32).collect();
    (logits, labels)
}

// batch 1; 63/65 around the 64-wide workgroup; 32 and 128 the presets' batches; 1000 many
// rows per invocation.
const BATCHES: &[usize] = &[1, 63, 65, 32, 128, 1000];

#[test]
fn softmax_xent_forward_matches_reference() {
    for (&batch, smoothing) in BATCHES.iter().flat_map(|b| [(b, 0.0), (b, 0.1)]) {
        let s = XentShape {
            batch,
            classes: 10,
            smoothing,
        };
        let (logits, labels) = data(s, batch as u64);
        let (tl, ty) = (upload("logits", &logits), upload_u32("labels", &labels));
        // Metrics accumulate: start from earlier values and run the batch twice.
        let metrics_t = upload("metrics", &[1.5, 2.0, 3.0, 0.0]);
        let d = softmax_xent_forward(gpu(), s, &tl, &ty, &metrics_t, CounterDuty::None).unwrap();
        run(&[&d, &d]);
        let mut grad = vec![0.0; logits.len()];
        let (loss, correct) = softmax_xent_reference(&mut grad, &logits, &labels, s);
        let want = [
            1.5 + 2.0 * loss as f32,
            2.0 + 2.0 * correct as f32,
            3.0 + 2.0 * batch as f32,
            (loss / batch as f64) as f32,
        ];
        // The loss sum adds `batch` terms of size ~3: allow the f32 summation error of that length.
        assert_close(
            &format!("softmax_xent_forward metrics batch={batch} smoothing={smoothing}"),
            &read(&metrics_t),
            &want,
            1e-4,
            1e-5 * (batch as f64).sqrt(),
        );
    }
}

#[test]
fn softmax_xent_backward_matches_reference() {
    for (&batch, smoothing) in BATCHES.iter().flat_map(|b| [(b, 0.0), (b, 0.1)]) {
        let s = XentShape {
            batch,
            classes: 10,
            smoothing,
        };
        let (logits, labels) = data(s, 100 + batch as u64);
        let (tl, ty, tg) = (
            upload("logits", &logits),
            upload_u32("labels", &labels),
            zeros("dlogits", logits.len()),
        );
        run(&[&softmax_xent_backward(gpu(), s, &tl, &ty, &tg).unwrap()]);
        let mut grad = vec![0.0; logits.len()];
        softmax_xent_reference(&mut grad, &logits, &labels, s);
        assert_kernel_close(
            &format!("softmax_xent_backward batch={batch} smoothing={smoothing}"),
            &read(&tg),
            &grad,
        );
    }
}

#[test]
fn softmax_xent_train_equals_forward_then_backward() {
    for (&batch, smoothing) in BATCHES.iter().flat_map(|b| [(b, 0.0), (b, 0.1)]) {
        let s = XentShape {
            batch,
            classes: 10,
            smoothing,
        };
        let (logits, labels) = data(s, 200 + batch as u64);
        let (tl, ty) = (upload("logits", &logits), upload_u32("labels", &labels));
        let start = [1.5, 2.0, 3.0, 0.0];
        let (pair_m, pair_g) = (upload("metrics", &start), zeros("dlogits", logits.len()));
        let (fused_m, fused_g) = (upload("metrics", &start), zeros("dlogits", logits.len()));
        run(&[
            &softmax_xent_forward(gpu(), s, &tl, &ty, &pair_m, CounterDuty::None).unwrap(),
            &softmax_xent_backward(gpu(), s, &tl, &ty, &pair_g).unwrap(),
            &softmax_xent_train(gpu(), s, &tl, &ty, &fused_m, &fused_g, CounterDuty::None).unwrap(),
        ]);
        let what = format!("batch={batch} smoothing={smoothing}");
        // The same arithmetic in the same order: equal bits, not merely close.
        assert_eq!(read(&fused_m), read(&pair_m), "metrics, {what}");
        assert_eq!(read(&fused_g), read(&pair_g), "gradient, {what}");
        let mut grad = vec![0.0; logits.len()];
        let (loss, correct) = softmax_xent_reference(&mut grad, &logits, &labels, s);
        assert_kernel_close(
            &format!("softmax_xent_train {what}"),
            &read(&fused_g),
            &grad,
        );
        let m = read(&fused_m);
        assert_eq!(m[1], 2.0 + correct as f32, "correct count, {what}");
        let want_loss = 1.5 + loss as f32;
        assert!(
            (m[0] - want_loss).abs() <= 1e-4 * want_loss.abs() + 1e-4,
            "loss {m:?} {what}"
        );
    }
}

/// The loss with the classifier's input gradient: metrics, dlogits and the counter bit for
/// bit as softmax_xent_train; dx = dlogits W against the linear layer's reference, masked
/// where a ReLU produced its input.
#[test]
fn softmax_xent_train_input_grad_matches_train_and_the_linear_reference() {
    use wgpu_fmnist::kernels::matmul::{linear_backward_reference, LinearShape};
    for (&batch, inputs) in BATCHES.iter().zip([1, 64, 33, 128, 640, 7]) {
        let s = XentShape {
            batch,
            classes: 10,
            smoothing: 0.1,
        };
        let (logits, labels) = data(s, 300 + batch as u64);
        let mut r = rng(400 + batch as u64);
        let w = r.vec(10 * inputs, -0.3, 0.3);
        let x: Vec<f32> = r.vec(batch * inputs, -1.0, 1.0);
        let (tl, ty, tw, tx) = (
            upload("logits", &logits),
            upload_u32("labels", &labels),
            upload("w", &w),
            upload("x", &x),
        );
        let start = [1.5, 2.0, 3.0, 0.0];
        let (plain_m, plain_g) = (upload("metrics", &start), zeros("dlogits", logits.len()));
        let (m, g) = (upload("metrics", &start), zeros("dlogits", logits.len()));
        let (plain_c, c) = (
            upload_u32("counter", &[5, 3, 0, 9]),
            upload_u32("counter", &[5, 3, 0, 9]),
        );
        let (dx, masked) = (zeros("dx", x.len()), zeros("masked dx", x.len()));
        let classifier = |relu_input, dx| Classifier {
            inputs,
            weight: &tw,
            x: &tx,
            relu_input,
            dx,
        };
        let snap = CounterDuty::Snapshot;
        run(&[
            &softmax_xent_train(gpu(), s, &tl, &ty, &plain_m, &plain_g, snap(&plain_c)).unwrap(),
            &softmax_xent_train_input_grad(
                gpu(),
                s,
                &tl,
                &ty,
                &m,
                &g,
                snap(&c),
                classifier(false, &dx),
            )
            .unwrap(),
            &softmax_xent_train_input_grad(
                gpu(),
                s,
                &tl,
                &ty,
                &zeros("m", 4),
                &zeros("g", logits.len()),
                CounterDuty::None,
                classifier(true, &masked),
            )
            .unwrap(),
        ]);
        let what = format!("batch={batch} inputs={inputs}");
        assert_eq!(read(&m), read(&plain_m), "metrics, {what}");
        assert_eq!(read(&g), read(&plain_g), "dlogits, {what}");
        assert_eq!(read_u32(&c), read_u32(&plain_c), "counter, {what}");
        let ls = LinearShape {
            batch,
            inputs,
            outputs: 10,
        };
        let dlogits = read(&plain_g);
        let (mut want, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; 10]);
        linear_backward_reference(&mut want, &mut dw, &mut db, &dlogits, &x, &w, ls);
        assert_kernel_close(&format!("dx {what}"), &read(&dx), &want);
        let want_masked: Vec<f32> = want
            .iter()
            .zip(&x)
            .map(|(&g, &v)| if v > 0.0 { g } else { 0.0 })
            .collect();
        let got = read(&masked);
        assert_kernel_close(&format!("masked dx {what}"), &got, &want_masked);
        assert!(
            x.iter().zip(&got).all(|(&v, &g)| v > 0.0 || g == 0.0),
            "{what}"
        );
    }
}

#[test]
fn the_loss_keeps_the_step_counter() {
    // Training copies the step for the update (which ends the step); evaluation ends its
    // step itself. Neither touches [1] or [3], and the loss is the same either way.
    let s = XentShape {
        batch: 65,
        classes: 10,
        smoothing: 0.0,
    };
    let (logits, labels) = data(s, 9);
    let (tl, ty) = (upload("logits", &logits), upload_u32("labels", &labels));
    let plain = zeros("metrics", metrics::LEN);
    run(&[&softmax_xent_forward(gpu(), s, &tl, &ty, &plain, CounterDuty::None).unwrap()]);
    let (m, g) = (
        zeros("metrics", metrics::LEN),
        zeros("dlogits", logits.len()),
    );
    let counter = upload_u32("counter", &[5, 3, 0, 9]);
    let train = CounterDuty::Snapshot(&counter);
    run(&[&softmax_xent_train(gpu(), s, &tl, &ty, &m, &g, train).unwrap()]);
    assert_eq!(read_u32(&counter), vec![5, 3, 5, 9]);
    assert_eq!(read(&m), read(&plain));
    let m = zeros("metrics", metrics::LEN);
    let eval = CounterDuty::Advance(&counter);
    let d = softmax_xent_forward(gpu(), s, &tl, &ty, &m, eval).unwrap();
    run(&[&d, &d]);
    assert_eq!(read_u32(&counter), vec![7, 3, 5, 9]);
    // A counter too short for the layout is refused, not written past.
    let short = upload_u32("counter", &[0, 0]);
    let err = softmax_xent_forward(gpu(), s, &tl, &ty, &m, CounterDuty::Advance(&short));
    assert!(err.is_err());
}

#[test]
fn softmax_xent_is_stable_for_large_logits() {
    let s = XentShape {
        batch: 2,
        classes: 3,
        smoothing: 0.0,
    };
    let logits = [1000.0, 0.0, -1000.0, -500.0, 500.0, 499.0];
    let (tl, ty) = (upload("logits", &logits), upload_u32("labels", &[0, 2]));
    let (tm, tg) = (zeros("metrics", metrics::LEN), zeros("dlogits", 6));
    run(&[
        &softmax_xent_forward(gpu(), s, &tl, &ty, &tm, CounterDuty::None).unwrap(),
        &softmax_xent_backward(gpu(), s, &tl, &ty, &tg).unwrap(),
    ]);
    let m = read(&tm);
    // Row 0 is right with loss ~0; row 1 is wrong with loss log(1 + e) + ... ~= 1.3133.
    let want_loss = (1.0f64 + 1.0f64.exp()).ln() as f32;
    assert_close(
        "large-logit loss",
        &m[..3],
        &[want_loss, 1.0, 2.0],
        1e-4,
        1e-5,
    );
    assert!(read(&tg).iter().all(|v| v.is_finite()));
}

#[test]
fn softmax_xent_backward_reference_matches_finite_differences() {
    let s = XentShape {
        batch: 4,
        classes: 10,
        smoothing: 0.2,
    };
    let (logits, labels) = data(s, 3);
    let mut grad = vec![0.0; logits.len()];
    softmax_xent_reference(&mut grad, &logits, &labels, s);
    // The mean loss as a one-output "forward".
    check_gradient(
        "softmax_xent",
        &logits,
        &grad,
        &[1.0],
        logits.len(),
        1e-2,
        1e-3,
        |l| {
            let mut g = vec![0.0; l.len()];
            vec![(softmax_xent_reference(&mut g, l, &labels, s).0 / s.batch as f64) as f32]
        },
    );
}

#[test]
fn label_smoothing_matches_torch_at_large_logits() {
    // torch.nn.functional.cross_entropy(tensor([[1000., 0., -1000.]]), tensor([0]),
    // label_smoothing=0.1) = 100.0: lse 1000 minus 0.9 * 1000 + 0.1 / 3 * 0.
    let s = XentShape {
        batch: 1,
        classes: 3,
        smoothing: 0.1,
    };
    let (tl, ty) = (
        upload("logits", &[1000.0, 0.0, -1000.0]),
        upload_u32("labels", &[0]),
    );
    let (tm, tg) = (zeros("metrics", metrics::LEN), zeros("dlogits", 3));
    run(&[
        &softmax_xent_forward(gpu(), s, &tl, &ty, &tm, CounterDuty::None).unwrap(),
        &softmax_xent_backward(gpu(), s, &tl, &ty, &tg).unwrap(),
    ]);
    assert_close(
        "smoothed loss",
        &read(&tm)[..3],
        &[100.0, 1.0, 1.0],
        1e-3,
        1e-6,
    );
    // softmax = (1, 0, 0); target = (0.9 + 0.1/3, 0.1/3, 0.1/3).
    let third = 0.1f32 / 3.0;
    assert_close(
        "smoothed gradient",
        &read(&tg),
        &[1.0 - 0.9 - third, -third, -third],
        1e-6,
        1e-5,
    );
}
