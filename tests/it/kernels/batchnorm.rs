use crate::common::*;
use std::sync::OnceLock;
use wgpu_fmnist::gpu::{AdapterRequest, Gpu, Tensor, Variant};
use wgpu_fmnist::kernels::batchnorm::*;
use wgpu_fmnist::kernels::elementwise::relu_backward_reference;

/// (n, c, hw) with the reason each is here.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("batch 1 of a BatchNorm2d", 1, 3, 25),
    ("BatchNorm1d (hw = 1), channels off 64", 5, 7, 1),
    ("fewer elements per channel than the workgroup", 2, 4, 3),
    (
        "smallest planes of whole vec4s (hw = 4), odd channel count",
        3,
        5,
        4,
    ),
    ("regcnn bn1 (32x26x26)", 4, 32, 26 * 26),
    ("regcnn bn2 (64x11x11) at batch 32", 32, 64, 11 * 11),
    ("cnn2 bn3 (128x7x7)", 3, 128, 49),
    ("vgg bn (64x28x28)", 2, 64, 28 * 28),
];

struct Layer {
    gamma: Tensor,
    beta: Tensor,
    rm: Tensor,
    rv: Tensor,
    /// Saved batch statistics: mean at [c], 1/std at [C + c].
    stats: Tensor,
}

impl Layer {
    fn tensors(&self) -> BatchNormTensors<'_> {
        BatchNormTensors {
            gamma: &self.gamma,
            beta: &self.beta,
            running_mean: &self.rm,
            running_var: &self.rv,
            save_stats: &self.stats,
        }
    }
}

struct Data {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
    dy: Vec<f32>,
}

fn data(s: BatchNormShape, seed: u64) -> Data {
    let mut r = rng(seed);
    // An offset and scale per channel, like real activations, to exercise the two-pass variance.
    let x = (0..s.len())
        .map(|i| {
            let c = (i / s.hw) % s.c;
            1.5 * c as f32 / s.c as f32 + (0.5 + c as f32 * 0.1) * r.uniform(-1.0, 1.0)
        })
        .collect();
    Data {
        x,
        gamma: r.vec(s.c, 0.5, 1.5),
        beta: r.vec(s.c, -0.5, 0.5),
        rm: r.vec(s.c, -0.1, 0.1),
        rv: r.vec(s.c, 0.9, 1.1),
        dy: r.vec(s.len(), -1.0, 1.0),
    }
}

/// A device per variant, forced (`generic`, `vec4`, `tiled`): each runs its variant where
/// it applies to a shape and the automatic choice elsewhere.
fn devices() -> &'static [(Variant, Gpu)] {
    static DEVICES: OnceLock<Vec<(Variant, Gpu)>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        [Variant::Generic, Variant::Vec4, Variant::Tiled]
            .into_iter()
            .map(|v| {
                (
                    v,
                    Gpu::new(&AdapterRequest::default())
                        .unwrap()
                        .prefer(v)
                        .unwrap(),
                )
            })
            .collect()
    })
}

/// A shape (why it is here, n, c, hw) and its index.
type Shape = (usize, &'static (&'static str, usize, usize, usize));

/// Every shape on every variant's device.
fn cases() -> impl Iterator<Item = (Shape, (Variant, &'static Gpu))> {
    SHAPES
        .iter()
        .enumerate()
        .flat_map(|shape| devices().iter().map(move |(v, g)| (shape, (*v, g))))
}

fn read_on(g: &Gpu, t: &Tensor) -> Vec<f32> {
    g.read::<f32>(t).unwrap()
}

fn layer(g: &Gpu, d: &Data) -> Layer {
    let c = d.gamma.len();
    Layer {
        gamma: g.upload("gamma", &d.gamma).unwrap(),
        beta: g.upload("beta", &d.beta).unwrap(),
        rm: g.upload("running_mean", &d.rm).unwrap(),
        rv: g.upload("running_var", &d.rv).unwrap(),
        stats: g.zeros("save_stats", 2 * c).unwrap(),
    }
}

#[test]
fn batchnorm_forward_matches_reference() {
    for ((i, &(why, n, c, hw)), (v, g)) in cases() {
        let s = BatchNormShape::new(n, c, hw);
        let d = data(s, i as u64);
        let l = layer(g, &d);
        let (tx, ty, te) = (
            g.upload("x", &d.x).unwrap(),
            g.zeros("y", s.len()).unwrap(),
            g.zeros("y_eval", s.len()).unwrap(),
        );
        let fwd = batchnorm_forward_train(g, s, &l.tensors(), &tx, &ty).unwrap();
        g.run(&fwd.iter().collect::<Vec<_>>()).unwrap();
        // The forced variant runs where it applies: two-level sums take one more dispatch.
        let planes = v == Variant::Tiled && hw >= 16;
        assert_eq!(fwd.len(), if planes { 3 } else { 2 }, "{v} hw={hw}");
        assert_eq!(
            fwd[0].label().contains("plane_stats"),
            planes,
            "{}",
            fwd[0].label()
        );
        let (mut y, mut mean, mut invstd) = (vec![0.0; s.len()], vec![0.0; c], vec![0.0; c]);
        let (mut rm, mut rv) = (d.rm.clone(), d.rv.clone());
        batchnorm_forward_train_reference(
            &mut y,
            &mut mean,
            &mut invstd,
            &mut rm,
            &mut rv,
            &d.x,
            &d.gamma,
            &d.beta,
            s,
        );
        let desc = format!("{v} {} ({why})", s.describe());
        assert_kernel_close(
            &format!("batchnorm_forward_train y {desc}"),
            &read_on(g, &ty),
            &y,
        );
        assert_kernel_close(
            &format!("batchnorm_forward_train mean {desc}"),
            &read_on(g, &l.stats)[..c],
            &mean,
        );
        assert_kernel_close(
            &format!("batchnorm_forward_train invstd {desc}"),
            &read_on(g, &l.stats)[c..2 * c],
            &invstd,
        );
        assert_kernel_close(
            &format!("batchnorm running_mean {desc}"),
            &read_on(g, &l.rm),
            &rm,
        );
        assert_kernel_close(
            &format!("batchnorm running_var {desc}"),
            &read_on(g, &l.rv),
            &rv,
        );

        // Eval mode with the running statistics the training pass just produced.
        g.run(&[&batchnorm_forward_eval(g, s, &l.tensors(), &tx, &te).unwrap()])
            .unwrap();
        let mut ye = vec![0.0; s.len()];
        batchnorm_forward_eval_reference(&mut ye, &d.x, &d.gamma, &d.beta, &rm, &rv, s);
        assert_kernel_close(
            &format!("batchnorm_forward_eval {desc}"),
            &read_on(g, &te),
            &ye,
        );
    }
}

#[test]
fn batchnorm_backward_matches_reference() {
    for ((i, &(why, n, c, hw)), (v, g)) in cases() {
        let s = BatchNormShape::new(n, c, hw);
        let d = data(s, 10 + i as u64);
        let l = layer(g, &d);
        let (tx, ty, tdy) = (
            g.upload("x", &d.x).unwrap(),
            g.zeros("y", s.len()).unwrap(),
            g.upload("dy", &d.dy).unwrap(),
        );
        let (tdx, tdg, tdb) = (
            g.zeros("dx", s.len()).unwrap(),
            g.zeros("dgamma", c).unwrap(),
            g.zeros("dbeta", c).unwrap(),
        );
        let fwd = batchnorm_forward_train(g, s, &l.tensors(), &tx, &ty).unwrap();
        let bwd =
            batchnorm_backward(g, s, &l.tensors(), &tx, &tdy, &tdx, &tdg, &tdb, false).unwrap();
        g.run(&fwd.iter().chain(&bwd).collect::<Vec<_>>()).unwrap();
        // x from a ReLU fused into the step before: dx also goes through its backward.
        let tdx_relu = g.zeros("dx", s.len()).unwrap();
        let masked = batchnorm_backward(g, s, &l.tensors(), &tx, &tdy, &tdx_relu, &tdg, &tdb, true);
        g.run(&masked.unwrap().iter().collect::<Vec<_>>()).unwrap();
        let (mut dx, mut dg, mut db) = (vec![0.0; s.len()], vec![0.0; c], vec![0.0; c]);
        batchnorm_backward_reference(&mut dx, &mut dg, &mut db, &d.dy, &d.x, &d.gamma, s);
        let desc = format!("{v} {} ({why})", s.describe());
        // dgamma and dbeta sum up to 32*121 = 3872 terms per channel; atol 1e-4 still holds.
        assert_kernel_close(
            &format!("batchnorm_backward dx {desc}"),
            &read_on(g, &tdx),
            &dx,
        );
        let mut dx_relu = vec![0.0; s.len()];
        relu_backward_reference(&mut dx_relu, &dx, &d.x);
        assert!(d.x.iter().any(|&v| v <= 0.0));
        assert_kernel_close(
            &format!("batchnorm_backward dx, relu input {desc}"),
            &read_on(g, &tdx_relu),
            &dx_relu,
        );
        assert_kernel_close(
            &format!("batchnorm_backward dgamma {desc}"),
            &read_on(g, &tdg),
            &dg,
        );
        assert_kernel_close(
            &format!("batchnorm_backward dbeta {desc}"),
            &read_on(g, &tdb),
            &db,
        );
    }
}

#[test]
fn batchnorm_backward_reference_matches_finite_differences() {
    for (n, c, hw) in [(3, 2, 4), (6, 3, 1)] {
        let s = BatchNormShape::new(n, c, hw);
        let d = data(s, 99);
        let (mut dx, mut dg, mut db) = (vec![0.0; s.len()], vec![0.0; c], vec![0.0; c]);
        batchnorm_backward_reference(&mut dx, &mut dg, &mut db, &d.dy, &d.x, &d.gamma, s);
        let fwd = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let (mut y, mut m, mut v) = (vec![0.0; s.len()], vec![0.0; c], vec![0.0; c]);
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            batchnorm_forward_train_reference(
                &mut y, &mut m, &mut v, &mut rm, &mut rv, x, gamma, beta, s,
            );
            y
        };
        let desc = s.describe();
        check_gradient(
            &format!("batchnorm dx {desc}"),
            &d.x,
            &dx,
            &d.dy,
            s.len(),
            1e-3,
            2e-3,
            |x| fwd(x, &d.gamma, &d.beta),
        );
        check_gradient(
            &format!("batchnorm dgamma {desc}"),
            &d.gamma,
            &dg,
            &d.dy,
            c,
            1e-2,
            1e-3,
            |g| fwd(&d.x, g, &d.beta),
        );
        check_gradient(
            &format!("batchnorm dbeta {desc}"),
            &d.beta,
            &db,
            &d.dy,
            c,
            1e-2,
            1e-3,
            |b| fwd(&d.x, &d.gamma, b),
        );
    }
}
