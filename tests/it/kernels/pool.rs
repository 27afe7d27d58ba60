use crate::common::*;
use wgpu_fmnist::gpu::Tensor;
use wgpu_fmnist::kernels::dropout::{dropout_forward_reference, DropoutConfig};
use wgpu_fmnist::kernels::elementwise::{relu_backward_reference, relu_forward_reference};
use wgpu_fmnist::kernels::pool::*;
use wgpu_fmnist::kernels::select;

/// A step counter for the fused dropout masks: [step, 0].
fn counter(step: u32) -> Tensor {
    upload_u32("counter", &[step, 0])
}

const PLAIN: PoolFusion = PoolFusion {
    relu: false,
    pre_dropout: None,
    post_dropout: None,
    seed: 0,
};

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
    for v in select::pool::applicable() {
        eprintln!("variant {v}");
        for (i, (why, s)) in shapes().into_iter().enumerate() {
            let x = rng(i as u64).vec(s.input_len(), -1.0, 1.0);
            let (tx, ty, ta) = (
                upload("x", &x),
                zeros("y", s.output_len()),
                zeros("argmax", s.output_len()),
            );
            let c = counter(0);
            run(&[&maxpool_forward_with(gpu(), v, s, PLAIN, None, &c, &tx, &ty, &ta).unwrap()]);
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
}

#[test]
fn maxpool_forward_breaks_ties_like_pytorch() {
    for v in select::pool::applicable() {
        eprintln!("variant {v}");
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
        let c = counter(0);
        run(&[&maxpool_forward_with(gpu(), v, s, PLAIN, None, &c, &tx, &ty, &ta).unwrap()]);
        assert_eq!(read_u32(&ta), vec![0, 2, 8, 10]);
    }
}

#[test]
fn maxpool_backward_matches_reference() {
    for v in select::pool::applicable() {
        eprintln!("variant {v}");
        for (i, (why, s)) in shapes().into_iter().enumerate() {
            let x = rng(20 + i as u64).vec(s.input_len(), -1.0, 1.0);
            let dy = rng(40 + i as u64).vec(s.output_len(), -1.0, 1.0);
            let (tx, ty, ta) = (
                upload("x", &x),
                zeros("y", s.output_len()),
                zeros("argmax", s.output_len()),
            );
            let (tdy, tdx) = (upload("dy", &dy), zeros("dx", s.input_len()));
            let c = counter(0);
            run(&[
                &maxpool_forward_with(gpu(), v, s, PLAIN, None, &c, &tx, &ty, &ta).unwrap(),
                &maxpool_backward_with(gpu(), v, s, PLAIN, &tdy, &ta, &tdx).unwrap(),
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
}

/// The fused pool against the layers it replaces, run one after the other on the CPU:
/// dropout (pre), ReLU, max pool, dropout (post); forward and backward.
#[test]
fn maxpool_with_fused_activations_matches_the_separate_layers() {
    for v in select::pool::applicable() {
        eprintln!("variant {v}");
        let step = 7;
        let pre = Dropout { layer: 2, p: 0.2 };
        let post = Dropout { layer: 5, p: 0.25 };
        let fusions = [
            ("relu", true, None, None),
            ("pre dropout", false, Some(pre), None),
            ("pre dropout + relu (regcnn)", true, Some(pre), None),
            ("relu + post dropout (cnn2)", true, None, Some(post)),
            ("post dropout (vgg)", false, None, Some(post)),
            ("all three", true, Some(pre), Some(post)),
        ];
        for (i, (why, s)) in shapes().into_iter().enumerate() {
            for (j, &(what, relu, pre_dropout, post_dropout)) in fusions.iter().enumerate() {
                let f = PoolFusion {
                    relu,
                    pre_dropout,
                    post_dropout,
                    seed: 11,
                };
                let cfg = |d: Dropout, n: usize| DropoutConfig {
                    n,
                    p: d.p,
                    seed: f.seed,
                    layer: d.layer,
                };
                let x = rng(60 + i as u64).vec(s.input_len(), -1.0, 1.0);
                let dy = rng(80 + j as u64).vec(s.output_len(), -1.0, 1.0);
                // Forward on the CPU, layer by layer.
                let mut a = x.clone();
                if let Some(d) = pre_dropout {
                    dropout_forward_reference(&mut a, &x, cfg(d, x.len()), step);
                }
                let relu_in = a.clone();
                if relu {
                    relu_forward_reference(&mut a, &relu_in);
                }
                let (mut y, mut arg) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
                maxpool_forward_reference(&mut y, &mut arg, &a, s);
                let pooled = y.clone();
                if let Some(d) = post_dropout {
                    dropout_forward_reference(&mut y, &pooled, cfg(d, pooled.len()), step);
                }
                // Backward on the CPU, in reverse.
                let mut g = dy.clone();
                if let Some(d) = post_dropout {
                    dropout_forward_reference(&mut g, &dy, cfg(d, dy.len()), step);
                }
                let mut dx = vec![0.0; s.input_len()];
                maxpool_backward_reference(&mut dx, &g, &arg, s);
                if relu {
                    let routed = dx.clone();
                    relu_backward_reference(&mut dx, &routed, &relu_in);
                }
                if let Some(d) = pre_dropout {
                    let gated = dx.clone();
                    dropout_forward_reference(&mut dx, &gated, cfg(d, gated.len()), step);
                }
                // The fused kernels.
                let c = counter(step);
                let (tx, ty, ta) = (
                    upload("x", &x),
                    zeros("y", s.output_len()),
                    zeros("argmax", s.output_len()),
                );
                let (tdy, tdx) = (upload("dy", &dy), zeros("dx", s.input_len()));
                run(&[
                    &maxpool_forward_with(gpu(), v, s, f, None, &c, &tx, &ty, &ta).unwrap(),
                    &maxpool_backward_with(gpu(), v, s, f, &tdy, &ta, &tdx).unwrap(),
                ]);
                let d = s.describe();
                assert_kernel_close(&format!("fused {what} forward {d} ({why})"), &read(&ty), &y);
                assert_kernel_close(
                    &format!("fused {what} backward {d} ({why})"),
                    &read(&tdx),
                    &dx,
                );
                if s.k != s.stride {
                    continue;
                }
                // Tiling windows after a convolution: the same dx, and the convolution's bias
                // gradient (the sum of dx over each channel) from the backward's row sums.
                let (tdx2, sums, db) = (
                    zeros("dx", s.input_len()),
                    zeros("row sums", s.rows()),
                    zeros("db", s.c),
                );
                run(
                    &maxpool_backward_conv_bias_with(gpu(), v, s, f, &tdy, &ta, &tdx2, &sums, &db)
                        .unwrap()
                        .iter()
                        .collect::<Vec<_>>(),
                );
                assert_eq!(read(&tdx2), read(&tdx), "{what} {d} ({why}): dx");
                let plane = s.h * s.w;
                let want: Vec<f32> = (0..s.c)
                    .map(|c| {
                        (0..s.n)
                            .flat_map(|n| &dx[(n * s.c + c) * plane..][..plane])
                            .map(|&v| v as f64)
                            .sum::<f64>() as f32
                    })
                    .collect();
                assert_kernel_close(
                    &format!("conv bias after fused {what} {d} ({why})"),
                    &read(&db),
                    &want,
                );
            }
        }
    }
}

/// A batch norm fused before the pool (and a ReLU): with batch statistics as when training,
/// with running statistics as when evaluating, against batch norm's own reference.
#[test]
fn maxpool_with_fused_batch_norm_matches_the_separate_layers() {
    for v in select::pool::applicable() {
        eprintln!("variant {v}");
        use wgpu_fmnist::kernels::batchnorm::{
            batchnorm_forward_eval_reference, BatchNormShape, BatchNormTensors,
        };
        for (i, (why, s)) in shapes().into_iter().enumerate() {
            let mut r = rng(90 + i as u64);
            let x = r.vec(s.input_len(), -2.0, 2.0);
            let (gamma, beta) = (r.vec(s.c, 0.5, 1.5), r.vec(s.c, -0.5, 0.5));
            let (mean, var) = (r.vec(s.c, -0.3, 0.3), r.vec(s.c, 0.5, 2.0));
            let bs = BatchNormShape::new(s.n, s.c, s.h * s.w);
            // Batch statistics are passed as 1/sqrt(var + eps), as batchnorm_stats saves them.
            let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + bs.eps).sqrt()).collect();
            let stats: Vec<f32> = mean.iter().chain(&invstd).copied().collect();
            let (tg, tb, tm, tv, ts) = (
                upload("gamma", &gamma),
                upload("beta", &beta),
                upload("mean", &mean),
                upload("var", &var),
                upload("stats", &stats),
            );
            let t = BatchNormTensors {
                gamma: &tg,
                beta: &tb,
                running_mean: &tm,
                running_var: &tv,
                save_stats: &ts,
            };
            // Both modes normalise with the same mean and variance here, so one reference.
            let mut a = vec![0.0; x.len()];
            batchnorm_forward_eval_reference(&mut a, &x, &gamma, &beta, &mean, &var, bs);
            let normed = a.clone();
            relu_forward_reference(&mut a, &normed);
            let (mut y, mut arg) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
            maxpool_forward_reference(&mut y, &mut arg, &a, s);
            let f = PoolFusion {
                relu: true,
                ..PLAIN
            };
            for training in [true, false] {
                let bn = FusedBatchNorm {
                    tensors: &t,
                    training,
                    eps: bs.eps,
                };
                let c = counter(0);
                let (tx, ty, ta) = (
                    upload("x", &x),
                    zeros("y", s.output_len()),
                    zeros("argmax", s.output_len()),
                );
                run(&[&maxpool_forward_with(gpu(), v, s, f, Some(bn), &c, &tx, &ty, &ta).unwrap()]);
                assert_kernel_close(
                    &format!(
                        "fused batch norm (training {training}) {} ({why})",
                        s.describe()
                    ),
                    &read(&ty),
                    &y,
                );
            }
        }
    }
}

/// The backward through a tiling pool, a ReLU and a dropout straight to a fused batch
/// norm's input, against the pool's, the activations' and batch norm's references in turn.
#[test]
fn maxpool_backward_through_fused_batch_norm_matches_the_separate_layers() {
    for v in select::pool::applicable() {
        eprintln!("variant {v}");
        use wgpu_fmnist::kernels::batchnorm::{
            batchnorm_backward_reference, batchnorm_forward_train_reference, BatchNormShape,
            BatchNormTensors,
        };
        let step = 3;
        let pre = Dropout { layer: 1, p: 0.3 };
        for (i, (why, s)) in shapes().into_iter().enumerate() {
            if s.k != s.stride {
                continue;
            }
            let mut r = rng(120 + i as u64);
            let x = r.vec(s.input_len(), -2.0, 2.0);
            let dy = r.vec(s.output_len(), -1.0, 1.0);
            let (gamma, beta) = (r.vec(s.c, 0.5, 1.5), r.vec(s.c, -0.5, 0.5));
            let bs = BatchNormShape::new(s.n, s.c, s.h * s.w);
            let f = PoolFusion {
                relu: true,
                pre_dropout: Some(pre),
                post_dropout: None,
                seed: 4,
            };
            // CPU: batch norm (training), dropout, ReLU, pool; then back again.
            let (mut a, mut mean, mut invstd) =
                (vec![0.0; x.len()], vec![0.0; s.c], vec![0.0; s.c]);
            let (mut rm, mut rv) = (vec![0.0; s.c], vec![1.0; s.c]);
            batchnorm_forward_train_reference(
                &mut a,
                &mut mean,
                &mut invstd,
                &mut rm,
                &mut rv,
                &x,
                &gamma,
                &beta,
                bs,
            );
            let cfg = DropoutConfig {
                n: x.len(),
                p: pre.p,
                seed: f.seed,
                layer: pre.layer,
            };
            let normed = a.clone();
            dropout_forward_reference(&mut a, &normed, cfg, step);
            let relu_in = a.clone();
            relu_forward_reference(&mut a, &relu_in);
            let (mut y, mut arg) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
            maxpool_forward_reference(&mut y, &mut arg, &a, s);
            let mut g = vec![0.0; x.len()];
            maxpool_backward_reference(&mut g, &dy, &arg, s);
            let routed = g.clone();
            relu_backward_reference(&mut g, &routed, &relu_in);
            let gated = g.clone();
            dropout_forward_reference(&mut g, &gated, cfg, step);
            let (mut dx, mut dgamma, mut dbeta) =
                (vec![0.0; x.len()], vec![0.0; s.c], vec![0.0; s.c]);
            batchnorm_backward_reference(&mut dx, &mut dgamma, &mut dbeta, &g, &x, &gamma, bs);
            // GPU: the fused forward (for the argmax), then the fused backward.
            let stats: Vec<f32> = mean.iter().chain(&invstd).copied().collect();
            let (tg, tb, trm, trv, ts) = (
                upload("gamma", &gamma),
                upload("beta", &beta),
                upload("running_mean", &rm),
                upload("running_var", &rv),
                upload("stats", &stats),
            );
            let t = BatchNormTensors {
                gamma: &tg,
                beta: &tb,
                running_mean: &trm,
                running_var: &trv,
                save_stats: &ts,
            };
            let bn = FusedBatchNorm {
                tensors: &t,
                training: true,
                eps: bs.eps,
            };
            let c = counter(step);
            let (tx, ty, ta, tdy) = (
                upload("x", &x),
                zeros("y", s.output_len()),
                zeros("argmax", s.output_len()),
                upload("dy", &dy),
            );
            let (tdx, tdg, tdb) = (
                zeros("dx", x.len()),
                zeros("dgamma", s.c),
                zeros("dbeta", s.c),
            );
            let fwd = maxpool_forward_with(gpu(), v, s, f, Some(bn), &c, &tx, &ty, &ta).unwrap();
            let [reduce, input] = maxpool_backward_batchnorm_with(
                gpu(),
                v,
                s,
                f,
                &t,
                &tx,
                &tdy,
                &ta,
                &tdx,
                &tdg,
                &tdb,
                false,
            )
            .unwrap();
            run(&[&fwd, &reduce, &input]);
            // x from a ReLU fused into the step before: dx also goes through its backward.
            let tdx_relu = zeros("dx", x.len());
            let [reduce_relu, input_relu] = maxpool_backward_batchnorm_with(
                gpu(),
                v,
                s,
                f,
                &t,
                &tx,
                &tdy,
                &ta,
                &tdx_relu,
                &tdg,
                &tdb,
                true,
            )
            .unwrap();
            run(&[&reduce_relu, &input_relu]);
            let mut dx_relu = vec![0.0; x.len()];
            relu_backward_reference(&mut dx_relu, &dx, &x);
            assert!(x.iter().any(|&v| v <= 0.0) && x.iter().any(|&v| v > 0.0));
            let d = format!("{} ({why})", s.describe());
            assert_kernel_close(
                &format!("fused bn backward dgamma {d}"),
                &read(&tdg),
                &dgamma,
            );
            assert_kernel_close(&format!("fused bn backward dbeta {d}"), &read(&tdb), &dbeta);
            assert_kernel_close(&format!("fused bn backward dx {d}"), &read(&tdx), &dx);
            assert_kernel_close(
                &format!("fused bn backward dx, relu input {d}"),
                &read(&tdx_relu),
                &dx_relu,
            );
        }
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
