//! Helpers shared by the integration tests: one GPU per test binary, seeded data,
//! tolerance checks that print the first mismatches, and finite-difference gradients.
#![allow(dead_code, clippy::too_many_arguments)]

use std::sync::OnceLock;
use wgpu_fmnist::data::{Images, Split};
use wgpu_fmnist::gpu::{AdapterRequest, Dispatch, Gpu, Tensor};
use wgpu_fmnist::rng::Rng;

/// The best adapter on this machine (lavapipe in CI), created once per test binary.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new(&AdapterRequest::default())
            .unwrap_or_else(|e| panic!("no GPU adapter for the tests: {e}"));
        eprintln!("tests run on {} ({:?})", gpu.info.name, gpu.info.backend);
        gpu
    })
}

pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}

pub fn upload(label: &str, data: &[f32]) -> Tensor {
    gpu().upload(label, data).unwrap()
}

pub fn upload_u32(label: &str, data: &[u32]) -> Tensor {
    gpu().upload(label, data).unwrap()
}

pub fn zeros(label: &str, len: usize) -> Tensor {
    gpu().zeros(label, len).unwrap()
}

pub fn read(t: &Tensor) -> Vec<f32> {
    gpu().read::<f32>(t).unwrap()
}

pub fn read_u32(t: &Tensor) -> Vec<u32> {
    gpu().read::<u32>(t).unwrap()
}

pub fn run(dispatches: &[&Dispatch]) {
    gpu().run(dispatches).unwrap()
}

/// `run` for kernels that return their dispatches as lists, in order.
pub fn run_lists(lists: &[Vec<Dispatch>]) {
    run(&lists.iter().flatten().collect::<Vec<_>>())
}

/// Largest |gpu - ref| seen, and the worst ratio to the allowed error.
pub struct Report {
    pub max_abs: f64,
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise; on failure prints the first
/// mismatches and the largest error. Prints the largest error on success too, for the notes.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Report {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let mut max_abs = 0f64;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let ok = err <= atol + rtol * (w as f64).abs();
        if !ok || g.is_finite() != w.is_finite() {
            bad.push((i, g, w, err));
        }
        if err.is_finite() {
            max_abs = max_abs.max(err);
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(i, g, w, e)| format!("  [{i}] gpu {g} ref {w} err {e:.3e}"))
            .collect();
        panic!(
            "{what}: {} of {} elements exceed {atol:e} + {rtol:e}*|ref| (max abs error {max_abs:.3e})\n{}",
            bad.len(),
            got.len(),
            first.join("\n")
        );
    }
    eprintln!(
        "{what}: {} elements, max abs error {max_abs:.3e}",
        got.len()
    );
    Report { max_abs }
}

/// The design's default kernel tolerance: |gpu - ref| <= 1e-4 + 1e-4 |ref|.
#[track_caller]
pub fn assert_kernel_close(what: &str, got: &[f32], want: &[f32]) -> Report {
    assert_close(what, got, want, 1e-4, 1e-4)
}

/// Checks `analytic` (dL/dx at `x`) against central differences of
/// L(x) = sum_i forward(x)_i * weights_i for a sample of `samples` indices of x.
#[track_caller]
pub fn check_gradient(
    what: &str,
    x: &[f32],
    analytic: &[f32],
    weights: &[f32],
    samples: usize,
    h: f32,
    tol: f64,
    forward: impl Fn(&[f32]) -> Vec<f32>,
) {
    let loss = |x: &[f32]| -> f64 {
        forward(x)
            .iter()
            .zip(weights)
            .map(|(&y, &w)| y as f64 * w as f64)
            .sum()
    };
    let mut r = Rng::new(0x5eed ^ x.len() as u64);
    let mut worst = 0f64;
    for s in 0..samples.min(x.len()) {
        let i = if samples >= x.len() {
            s
        } else {
            r.below(x.len())
        };
        let mut xp = x.to_vec();
        xp[i] = x[i] + h;
        let lp = loss(&xp);
        xp[i] = x[i] - h;
        let lm = loss(&xp);
        let numeric = (lp - lm) / (2.0 * (h as f64));
        let err = (numeric - analytic[i] as f64).abs();
        let scale = numeric.abs().max(analytic[i].abs() as f64).max(1.0);
        worst = worst.max(err / scale);
        assert!(
            err <= tol * scale,
            "{what}: gradient at [{i}] analytic {} vs finite difference {numeric} (err {err:.3e}, allowed {:.3e})",
            analytic[i],
            tol * scale
        );
    }
    eprintln!("{what}: finite differences agree, worst relative error {worst:.3e}");
}

/// A learnable synthetic data set: class c is a bright horizontal bar at row 2 + 2c, with noise.
pub fn synthetic(count: usize, seed: u64) -> Split {
    let mut r = wgpu_fmnist::rng::Rng::new(seed);
    let mut pixels = vec![0u8; count * 784];
    let mut labels = vec![0u8; count];
    for i in 0..count {
        let c = r.below(10);
        labels[i] = c as u8;
        for (p, px) in pixels[i * 784..(i + 1) * 784].iter_mut().enumerate() {
            let row = p / 28;
            let bar = row == 2 + 2 * c || row == 3 + 2 * c;
            *px = if bar {
                200 + r.below(55) as u8
            } else {
                r.below(60) as u8
            };
        }
    }
    Split {
        images: Images {
            count,
            rows: 28,
            cols: 28,
            pixels,
        },
        labels,
    }
}

/// The real Fashion-MNIST when installed (CI installs dataset-fashion-mnist); None, with a
/// note, where it is not.
pub fn real_data() -> Option<&'static std::path::Path> {
    let dir = std::path::Path::new(wgpu_fmnist::data::DEBIAN_DIR);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} not installed (CI installs dataset-fashion-mnist)",
            dir.display()
        );
        None
    }
}

/// The Chromium (or Chrome) on the PATH, if any (CI installs Debian's chromium).
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}
