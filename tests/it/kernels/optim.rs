use crate::common::*;
use wgpu_fmnist::kernels::optim::*;

// 1 element; 257 past one workgroup; 1600*128 regcnn's first linear weight.
const SIZES: &[usize] = &[1, 257, 1600 * 128];

fn sgd_configs() -> Vec<SgdConfig> {
    vec![
        SgdConfig {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            l1: 0.0,
        },
        SgdConfig {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-3,
            l1: 0.0,
        },
        SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-2,
            l1: 1e-3,
        },
    ]
}

#[test]
fn sgd_step_matches_reference() {
    for &n in SIZES {
        for (ci, cfg) in sgd_configs().into_iter().enumerate() {
            let mut r = rng(n as u64 + ci as u64);
            let mut w = r.vec(n, -1.0, 1.0);
            w[0] = 0.0; // sign(0) = 0 for L1, as torch.sign
            let (tw, tg, tv) = (upload("w", &w), zeros("grad", n), zeros("velocity", n));
            let counter = upload_u32("counter", &[0; 4]);
            // A two-entry schedule: step 0 uses 0.1, later steps 0.05.
            let lr = upload("lr", &[0.1, 0.05]);
            let step = sgd_step(gpu(), cfg, &tw, &tg, &tv, &counter, &lr, true, None).unwrap();
            let mut v = vec![0.0; n];
            for (t, rate) in [0.1f32, 0.05, 0.05].into_iter().enumerate() {
                let g = r.vec(n, -1.0, 1.0);
                gpu().write(&tg, &g).unwrap();
                snapshot_step(&counter);
                run(&[&step]);
                sgd_step_reference(&mut w, &mut v, &g, cfg, rate);
                assert_kernel_close(
                    &format!("sgd_step w n={n} {cfg:?} step {t}"),
                    &read(&tw),
                    &w,
                );
                assert_kernel_close(
                    &format!("sgd_step velocity n={n} {cfg:?} step {t}"),
                    &read(&tv),
                    &v,
                );
            }
            assert_eq!(read_u32(&counter), vec![3, 0, 2, 0]);
        }
    }
}

/// What the training loss dispatch does before the update: counter[2] = counter[0].
fn snapshot_step(counter: &wgpu_fmnist::gpu::Tensor) {
    let mut c = read_u32(counter);
    c[2] = c[0];
    gpu().write(counter, &c).unwrap();
}

#[test]
fn updates_read_the_step_from_the_loss_copy_and_only_the_last_ends_it() {
    // counter[0] = 7 but the copy says step 1: the update must use lr[1] and leave
    // counter[0] alone unless it ends the step.
    let cfg = SgdConfig {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
        l1: 0.0,
    };
    for ends_step in [false, true] {
        let (tw, tg, tv) = (
            upload("w", &[1.0; 4]),
            upload("grad", &[1.0; 4]),
            zeros("v", 4),
        );
        let counter = upload_u32("counter", &[7, 0, 1, 0]);
        let lr = upload("lr", &[0.5, 0.25, 0.125]);
        let step = sgd_step(gpu(), cfg, &tw, &tg, &tv, &counter, &lr, ends_step, None).unwrap();
        run(&[&step]);
        assert_eq!(read(&tw), vec![0.75; 4], "ends_step {ends_step}");
        let want = if ends_step { 2 } else { 7 };
        assert_eq!(read_u32(&counter), vec![want, 0, 1, 0]);
    }
}

#[test]
fn adam_step_matches_reference() {
    let configs = [
        AdamConfig::default(),
        AdamConfig {
            weight_decay: 1e-2,
            l1: 1e-3,
            ..AdamConfig::default()
        },
        AdamConfig {
            weight_decay: 1e-2,
            decoupled: true,
            ..AdamConfig::default()
        },
    ];
    for &n in SIZES {
        for (ci, cfg) in configs.into_iter().enumerate() {
            let mut r = rng(1000 + n as u64 + ci as u64);
            let mut w = r.vec(n, -1.0, 1.0);
            let (tw, tg, tm, tv) = (
                upload("w", &w),
                zeros("grad", n),
                zeros("m", n),
                zeros("v", n),
            );
            let counter = upload_u32("counter", &[0; 4]);
            let lr = upload("lr", &[1e-3]);
            let step =
                adam_step(gpu(), cfg, &tw, &tg, &tm, &tv, &counter, &lr, true, None).unwrap();
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            for t in 0..3u32 {
                let g = r.vec(n, -1.0, 1.0);
                gpu().write(&tg, &g).unwrap();
                snapshot_step(&counter);
                run(&[&step]);
                adam_step_reference(&mut w, &mut m, &mut v, &g, cfg, 1e-3, t);
                assert_kernel_close(
                    &format!("adam_step w n={n} {cfg:?} step {t}"),
                    &read(&tw),
                    &w,
                );
                assert_kernel_close(&format!("adam_step m n={n} step {t}"), &read(&tm), &m);
                assert_kernel_close(&format!("adam_step v n={n} step {t}"), &read(&tv), &v);
            }
        }
    }
}

#[test]
fn sgd_reference_matches_hand_computed_steps() {
    // torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.5) with w=1, grads 1 then 2:
    // g1 = 1 + 0.5*1 = 1.5, v1 = 1.5, w1 = 1 - 0.15 = 0.85
    // g2 = 2 + 0.5*0.85 = 2.425, v2 = 0.9*1.5 + 2.425 = 3.775, w2 = 0.85 - 0.3775 = 0.4725
    let cfg = SgdConfig {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.5,
        l1: 0.0,
    };
    let (mut w, mut v) = (vec![1.0f32], vec![0.0f32]);
    sgd_step_reference(&mut w, &mut v, &[1.0], cfg, 0.1);
    assert!((w[0] - 0.85).abs() < 1e-6);
    sgd_step_reference(&mut w, &mut v, &[2.0], cfg, 0.1);
    assert!(
        (v[0] - 3.775).abs() < 1e-6 && (w[0] - 0.4725).abs() < 1e-6,
        "v {} w {}",
        v[0],
        w[0]
    );
    // Nesterov: step = g + mu*v. First step from w=1, g=1, wd=0: v=1, step=1.9, w=1-0.19.
    let cfg = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.0,
        l1: 0.0,
    };
    let (mut w, mut v) = (vec![1.0f32], vec![0.0f32]);
    sgd_step_reference(&mut w, &mut v, &[1.0], cfg, 0.1);
    assert!((w[0] - 0.81).abs() < 1e-6, "w {}", w[0]);
}

#[test]
fn adam_reference_first_step_moves_each_weight_by_lr() {
    // At t = 1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps) ~= lr * sign(g).
    let g = [0.5f32, -2.0, 1e-3];
    let mut w = vec![0.0f32; 3];
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    adam_step_reference(&mut w, &mut m, &mut v, &g, AdamConfig::default(), 0.01, 0);
    for (wi, gi) in w.iter().zip(g) {
        assert!((wi + 0.01 * gi.signum()).abs() < 1e-6, "w {wi} for g {gi}");
    }
}

/// `--ema` in the update: the average of the new weights (a copy at step 0, then
/// lerp(avg, w, 1 - decay)) and, after them, of statistics that change every step, for
/// weight counts that are and are not multiples of 4; the weights update as without it.
#[test]
fn averaged_updates_match_the_reference() {
    let cfg = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-3,
        l1: 0.0,
    };
    let adam = AdamConfig::default();
    for &n in SIZES {
        for (stats_n, decay) in [(0usize, 0.9f32), (5, 0.999), (4, 0.5)] {
            let mut r = rng(77 + n as u64 + stats_n as u64);
            let w0 = r.vec(n, -1.0, 1.0);
            let (tw, tg, t1, t2) = (
                upload("w", &w0),
                zeros("grad", n),
                zeros("m1", n),
                zeros("m2", n),
            );
            let stats = zeros("stats", stats_n);
            let average = zeros("average", n.div_ceil(4) * 4 + stats_n);
            let averaging = Averaging {
                decay,
                average: &average,
                stats: (stats_n > 0).then_some(&stats),
            };
            let counter = upload_u32("counter", &[0; 4]);
            let lr = upload("lr", &[0.01]);
            let use_adam = stats_n == 5;
            let step = if use_adam {
                adam_step(
                    gpu(),
                    adam,
                    &tw,
                    &tg,
                    &t1,
                    &t2,
                    &counter,
                    &lr,
                    true,
                    Some(averaging),
                )
            } else {
                sgd_step(
                    gpu(),
                    cfg,
                    &tw,
                    &tg,
                    &t1,
                    &counter,
                    &lr,
                    true,
                    Some(averaging),
                )
            }
            .unwrap();
            let (mut w, mut m1, mut m2) = (w0.clone(), vec![0.0; n], vec![0.0; n]);
            let (mut avg_w, mut avg_s) = (vec![0.0; n], vec![0.0; stats_n]);
            for t in 0..4u32 {
                let (g, s) = (r.vec(n, -1.0, 1.0), r.vec(stats_n, 0.0, 3.0));
                gpu().write(&tg, &g).unwrap();
                if stats_n > 0 {
                    gpu().write(&stats, &s).unwrap();
                }
                snapshot_step(&counter);
                run(&[&step]);
                match use_adam {
                    true => adam_step_reference(&mut w, &mut m1, &mut m2, &g, adam, 0.01, t),
                    false => sgd_step_reference(&mut w, &mut m1, &g, cfg, 0.01),
                }
                average_reference(&mut avg_w, &w, decay, t);
                average_reference(&mut avg_s, &s, decay, t);
                let what = format!("n={n} stats={stats_n} decay={decay} step {t}");
                assert_kernel_close(&format!("w {what}"), &read(&tw), &w);
                let got = read(&average);
                assert_kernel_close(&format!("average of w {what}"), &got[..n], &avg_w);
                let start = n.div_ceil(4) * 4;
                assert_kernel_close(&format!("average of stats {what}"), &got[start..], &avg_s);
                // The padding between the weights' and the statistics' averages stays zero.
                assert!(got[n..start].iter().all(|&x| x == 0.0), "{what}: padding");
            }
            assert_eq!(read_u32(&counter), vec![4, 0, 3, 0]);
        }
    }
}

#[test]
fn the_average_reference_copies_then_interpolates() {
    let mut a = vec![5.0f32, -1.0];
    average_reference(&mut a, &[1.0, 3.0], 0.75, 0);
    assert_eq!(a, vec![1.0, 3.0], "step 0 copies");
    average_reference(&mut a, &[3.0, -1.0], 0.75, 1);
    // 1 + 0.25 (3 - 1) = 1.5; 3 + 0.25 (-1 - 3) = 2.
    assert_eq!(a, vec![1.5, 2.0]);
}
