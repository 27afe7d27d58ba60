//! `check` on the test adapter: the whole list passes, and a deliberately broken kernel is
//! caught and named (family and variant) while the other variants still pass.

use wgpu_fmnist::check::{self, Line, CASES};
use wgpu_fmnist::gpu::{AdapterRequest, Gpu, Variant, CONV2D_TILED};

fn own_gpu() -> Gpu {
    Gpu::new(&AdapterRequest::default()).expect("a GPU adapter for the tests")
}

#[test]
fn check_passes_on_the_test_adapter() {
    let mut gpu = own_gpu();
    let mut lines: Vec<Line> = Vec::new();
    let summary = check::run(&mut gpu, |l| lines.push(l.clone())).unwrap();
    let failed: Vec<String> = lines
        .iter()
        .filter(|l| !l.passed)
        .map(|l| {
            format!(
                "{} {} batch {}: {:?}",
                l.case, l.variant, l.batch, l.failure
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "check failed here:\n{}",
        failed.join("\n")
    );
    assert_eq!(summary.failed, 0);
    // Every case at every batch under auto and each variant this adapter has, plus 5
    // optimizer lines (sgd, adam, adamw; sgd and adam with --ema's average).
    let variants = 1 + check::VARIANTS
        .iter()
        .filter(|&&v| gpu.caps.supports(v).is_ok())
        .count();
    let runs: usize = CASES.iter().map(|c| c.batches.len()).sum();
    assert_eq!(summary.lines, runs * variants + 5);
    assert_eq!(
        gpu.caps.prefer,
        Variant::Auto,
        "check restores the preference"
    );
}

#[test]
fn check_catches_a_broken_kernel_and_names_it() {
    let mut gpu = own_gpu();
    // One row of the tiled convolution's 4x4 register block off by 1 %: what a driver
    // that miscompiles one FMA chain would do.
    assert!(gpu.patch_shader(
        &CONV2D_TILED,
        "a.r3 += av.w * bv;",
        "a.r3 += av.w * bv * 1.01;"
    ));
    let cases: Vec<_> = CASES
        .iter()
        .filter(|c| c.name.starts_with("conv2d 3x3 pad 1") || c.name.starts_with("dropout"))
        .copied()
        .collect();
    assert_eq!(cases.len(), 2);
    let mut lines: Vec<Line> = Vec::new();
    let summary = check::run_cases(&mut gpu, &cases, false, |l| lines.push(l.clone())).unwrap();
    let failed: Vec<&Line> = lines.iter().filter(|l| !l.passed).collect();
    assert_eq!(summary.failed, failed.len());
    // The convolution under `tiled` fails at both batches; nothing else does (the dropout
    // model has no convolution, the other variants run other kernels).
    assert_eq!(failed.len(), 2, "{lines:#?}");
    for l in &failed {
        assert_eq!(
            (l.case.as_str(), l.variant.as_str()),
            ("conv2d 3x3 pad 1", "tiled")
        );
        let why = l.failure.as_deref().unwrap();
        assert!(why.contains("differs from the CPU reference"), "{why}");
    }
}
