//! `wgpu-fmnist check`: does this adapter and driver compute our kernels right?
//!
//! Every kernel variant that can run here (`generic`, `vec4`, `3x3`, `tiled`, `subgroup`,
//! and the adapter's own automatic choice) runs a list of models — small ones that isolate
//! one kernel family on shapes off the tile multiples and at batch 1, then every preset —
//! through one whole training step (forward, loss, backward to every parameter) and one
//! inference, compared with the CPU references (`bench::validate_against`, the comparison
//! `bench` makes before it times anything). Then the optimizers' update kernels against
//! theirs. A driver that miscompiles a kernel shows up as a failing line naming the family
//! and variant. The test suite runs this same list on the test adapter (tests/it/check.rs).

use crate::bench::{expected, validate_against, Expected};
use crate::gpu::{Gpu, GpuError, Result, Tensor, Variant};
use crate::kernels::optim::{self, AdamConfig, SgdConfig};
use crate::model::{resolve, ModelSpec};
use std::time::Instant;

/// A model that exercises a kernel family, at the batch sizes to check it at.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// What it isolates, for the report.
    pub name: &'static str,
    /// A preset or a layer spec.
    pub model: &'static str,
    pub batches: &'static [usize],
}

/// The models `check` and the tests run. Channel counts and batches are off the kernels'
/// tile multiples (4, 8, 32, 64) on purpose, and batch 1 is in every small case.
pub const CASES: &[Case] = &[
    Case {
        name: "matmul, relu, softmax cross-entropy",
        model: "flatten linear(37) relu linear(10)",
        batches: &[1, 7],
    },
    Case {
        name: "conv2d 3x3 pad 1",
        model: "conv(5,3,1,1) relu flatten linear(10)",
        batches: &[1, 3],
    },
    Case {
        name: "conv2d 5x5 stride 2",
        model: "conv(6,5,2,1) relu flatten linear(10)",
        batches: &[1, 3],
    },
    Case {
        name: "conv2d 3x3, 70 channels (past a 64-wide tile)",
        model: "conv(9,3,1,1) relu conv(70,3,1,1) relu maxpool(2) flatten linear(10)",
        batches: &[2],
    },
    Case {
        name: "conv2d + relu + maxpool on one channel (fused)",
        model: "conv(8,3) relu maxpool(2) flatten linear(10)",
        batches: &[1, 5],
    },
    Case {
        name: "batchnorm (conv), maxpool backward with batchnorm",
        model: "conv(6,3,1,1) bn relu maxpool(2) flatten linear(10)",
        batches: &[1, 5],
    },
    Case {
        name: "relu in the conv, its backward in batchnorm (through dropout) and pool",
        model:
            "conv(6,3,1,1) relu dropout(0.2) bn conv(5,3,1,1) relu bn maxpool(2) flatten linear(10)",
        batches: &[1, 3],
    },
    Case {
        name: "batchnorm (linear)",
        model: "flatten linear(33) bn relu linear(10)",
        // Not 1 or 2: over 2 samples the variance is tiny and the bias gradient (zero but
        // for rounding) is rounding amplified by 1/std; PyTorch refuses batch 1 here.
        batches: &[3, 7],
    },
    Case {
        name: "maxpool 3 stride 2",
        model: "conv(4,3) relu maxpool(3,2) flatten linear(10)",
        batches: &[1, 3],
    },
    Case {
        name: "dropout",
        model: "flatten linear(40) relu dropout(0.3) linear(10)",
        batches: &[1, 9],
    },
    Case {
        name: "preset mlp",
        model: "mlp",
        batches: &[32],
    },
    Case {
        name: "preset cnn1",
        model: "cnn1",
        batches: &[16],
    },
    Case {
        name: "preset cnn2",
        model: "cnn2",
        batches: &[16],
    },
    Case {
        name: "preset regcnn",
        model: "regcnn",
        batches: &[32],
    },
    Case {
        name: "preset vgg",
        model: "vgg",
        batches: &[4],
    },
    Case {
        name: "preset fast",
        model: "fast",
        batches: &[8],
    },
];

/// The variants `check` forces, besides the automatic choice.
pub const VARIANTS: [Variant; 6] = [
    Variant::Generic,
    Variant::Vec4,
    Variant::Conv3x3,
    Variant::Tiled,
    Variant::Subgroup,
    Variant::SplitK,
];

/// One line of the report: a case at one batch under one variant.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Line {
    pub case: String,
    pub model: String,
    pub variant: String,
    pub batch: usize,
    /// Largest |gpu - reference| over the allowed error; above 1 fails. None: it failed
    /// before anything was compared (an error running it).
    pub worst_of_tolerance: Option<f64>,
    pub passed: bool,
    /// Why it failed: the tensor and element that differ, or the error.
    pub failure: Option<String>,
    pub seconds: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub adapter: String,
    pub lines: usize,
    pub failed: usize,
    pub seconds: f64,
}

/// Runs every case under every variant this adapter supports, then the optimizers,
/// calling `report` with each line as it is done. `gpu` should have no tuner (the forced
/// variants must run what they name); its `caps.prefer` is changed and restored.
pub fn run(gpu: &mut Gpu, report: impl FnMut(&Line)) -> Result<Summary> {
    run_cases(gpu, CASES, true, report)
}

/// `run` over some of the cases, with or without the optimizers.
pub fn run_cases(
    gpu: &mut Gpu,
    cases: &[Case],
    optimizers: bool,
    mut report: impl FnMut(&Line),
) -> Result<Summary> {
    let start = Instant::now();
    let original = gpu.caps.prefer;
    let variants: Vec<Variant> = std::iter::once(Variant::Auto)
        .chain(
            VARIANTS
                .into_iter()
                .filter(|&v| gpu.caps.supports(v).is_ok()),
        )
        .collect();
    let (mut lines, mut failed) = (0, 0);
    let mut emit = |line: Line| {
        lines += 1;
        failed += usize::from(!line.passed);
        report(&line);
    };
    for case in cases {
        let spec = resolve(case.model)
            .map_err(|e| GpuError::Shape {
                label: case.model.into(),
                message: e.to_string(),
            })?
            .0;
        for &batch in case.batches {
            // The CPU reference once per case and batch, compared with every variant.
            let want = expected(&spec, batch);
            for &v in &variants {
                gpu.caps.prefer = v;
                emit(check_model(gpu, case, &spec, &want, v));
            }
        }
    }
    gpu.caps.prefer = original;
    if optimizers {
        for line in check_optimizers(gpu) {
            emit(line);
        }
    }
    Ok(Summary {
        adapter: format!(
            "{} ({:?}, {})",
            gpu.info.name, gpu.info.backend, gpu.info.driver
        ),
        lines,
        failed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn check_model(gpu: &Gpu, case: &Case, spec: &ModelSpec, want: &Expected, v: Variant) -> Line {
    let t = Instant::now();
    let result = validate_against(gpu, spec, want);
    // An error outside a scope surfaces at the next sync: take it here, not in the next line.
    let result = result.and_then(|r| gpu.sync().map(|_| r));
    let (worst, failure) = match result {
        Ok(r) if r.worst_relative <= 1.0 => (Some(r.worst_relative), None),
        Ok(r) => (Some(r.worst_relative), Some("beyond the tolerance".into())),
        Err(e) => (None, Some(e.to_string())),
    };
    Line {
        case: case.name.into(),
        model: case.model.into(),
        variant: v.to_string(),
        batch: want.batch,
        worst_of_tolerance: worst,
        passed: failure.is_none(),
        failure,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// SGD (momentum, Nesterov, L2, L1) and Adam/AdamW over 3 steps against their references,
/// as training runs them: one dispatch over an arena holding tensors of sizes that are and
/// are not multiples of 4 (the kernels update 4 values per thread).
fn check_optimizers(gpu: &Gpu) -> Vec<Line> {
    let sgd = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-3,
        l1: 1e-4,
    };
    let adam = AdamConfig {
        weight_decay: 1e-2,
        l1: 1e-4,
        ..Default::default()
    };
    let adamw = AdamConfig {
        decoupled: true,
        ..adam
    };
    let mut lines = Vec::new();
    for (name, kind, ema) in [
        ("sgd (momentum, nesterov, L2, L1)", Opt::Sgd(sgd), None),
        ("adam (L2, L1)", Opt::Adam(adam), None),
        ("adamw", Opt::Adam(adamw), None),
        ("sgd + ema 0.9", Opt::Sgd(sgd), Some(0.9)),
        ("adam + ema 0.99", Opt::Adam(adam), Some(0.99)),
    ] {
        let t = Instant::now();
        let result = check_optimizer(gpu, kind, &OPTIMIZER_SIZES, ema);
        let (worst, failure) = match result {
            Ok(w) if w <= 1.0 => (Some(w), None),
            Ok(w) => (Some(w), Some("beyond the tolerance".into())),
            Err(e) => (None, Some(e.to_string())),
        };
        lines.push(Line {
            case: format!("optimizer {name}"),
            model: format!("one arena of n={OPTIMIZER_SIZES:?}"),
            variant: "generic".into(),
            batch: 0,
            worst_of_tolerance: worst,
            passed: failure.is_none(),
            failure,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    lines
}

/// The tensor sizes of the optimizer check's arena.
const OPTIMIZER_SIZES: [usize; 3] = [1, 1031, 4];

#[derive(Clone, Copy)]
enum Opt {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

/// The worst error of 3 steps' weights and state over 1e-5 + 1e-4 |want|, over every
/// tensor of the arena; the gaps between them must stay zero. With `ema`, also the average
/// of the weights and of running statistics that change every step.
fn check_optimizer(gpu: &Gpu, kind: Opt, sizes: &[usize], ema: Option<f32>) -> Result<f64> {
    let mut rng = crate::rng::Rng::new(sizes.iter().sum::<usize>() as u64 + 5);
    let names = |what: &str| -> Vec<(String, usize)> {
        let named = sizes.iter().enumerate();
        named
            .map(|(i, &n)| (format!("check {what} {i}"), n))
            .collect()
    };
    let (tw, tg) = (
        gpu.arena("check w", &names("w"))?,
        gpu.arena("check grad", &names("grad"))?,
    );
    let (t1, t2) = (
        gpu.arena("check state 1", &names("state 1"))?,
        gpu.arena("check state 2", &names("state 2"))?,
    );
    let mut w: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
    for (t, w) in tw.slices.iter().zip(&w) {
        gpu.write(t, w)?;
    }
    let mut s1: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut s2 = s1.clone();
    let lrs = [0.05f32, 0.02, 0.01];
    // The step as the training loss leaves it for the update: [0] copied to [2].
    let counter: Tensor = gpu.upload("check counter", &[0u32, 0, 0, 0])?;
    let lr = gpu.upload("check lr", &lrs)?;
    let stats_len = 6;
    let average = gpu.zeros("check average", tw.whole.len + stats_len)?;
    let stats = gpu.zeros("check statistics", stats_len)?;
    let averaging = ema.map(|decay| optim::Averaging {
        decay,
        average: &average,
        stats: Some(&stats),
    });
    let (mut avg_w, mut avg_stats) = (w.clone(), vec![0f32; stats_len]);
    let step = match kind {
        Opt::Sgd(c) => optim::sgd_step(
            gpu, c, &tw.whole, &tg.whole, &t1.whole, &counter, &lr, true, averaging,
        )?,
        Opt::Adam(c) => optim::adam_step(
            gpu, c, &tw.whole, &tg.whole, &t1.whole, &t2.whole, &counter, &lr, true, averaging,
        )?,
    };
    for (t, &rate) in lrs.iter().enumerate() {
        for k in 0..sizes.len() {
            let g = rng.vec(sizes[k], -0.5, 0.5);
            gpu.write(&tg.slices[k], &g)?;
            let (w, s1, s2) = (&mut w[k], &mut s1[k], &mut s2[k]);
            match kind {
                Opt::Sgd(c) => optim::sgd_step_reference(w, s1, &g, c, rate),
                Opt::Adam(c) => optim::adam_step_reference(w, s1, s2, &g, c, rate, t as u32),
            }
        }
        let batch_stats = rng.vec(stats_len, 0.0, 2.0);
        gpu.write(&stats, &batch_stats)?;
        if let Some(decay) = ema {
            for (a, w) in avg_w.iter_mut().zip(&w) {
                optim::average_reference(a, w, decay, t as u32);
            }
            optim::average_reference(&mut avg_stats, &batch_stats, decay, t as u32);
        }
        gpu.write(&counter, &[t as u32, 0, t as u32])?;
        gpu.run(&[&step])?;
        // The update ends the step: [0] = t + 1.
        if gpu.read::<u32>(&counter)?[0] != t as u32 + 1 {
            return Ok(f64::INFINITY);
        }
    }
    let mut worst = 0f64;
    let mut compare = |got: Vec<f32>, want: &[f32]| {
        for (&g, &w) in got.iter().zip(want) {
            let allowed = 1e-5 + 1e-4 * (w as f64).abs();
            let err = (g as f64 - w as f64).abs();
            worst = worst.max(if err.is_nan() {
                f64::INFINITY
            } else {
                err / allowed
            });
        }
    };
    for k in 0..sizes.len() {
        compare(gpu.read(&tw.slices[k])?, &w[k]);
        compare(gpu.read(&t1.slices[k])?, &s1[k]);
        if let Opt::Adam(_) = kind {
            compare(gpu.read(&t2.slices[k])?, &s2[k]);
        }
    }
    if ema.is_some() {
        let got: Vec<f32> = gpu.read(&average)?;
        for (slice, want) in tw.slices.iter().zip(&avg_w) {
            let start = (slice.offset_bytes() / 4) as usize;
            compare(got[start..start + slice.len].to_vec(), want);
        }
        compare(got[tw.whole.len..].to_vec(), &avg_stats);
    }
    // Nothing outside the slices moved: the whole arena holds exactly the slices' values.
    let whole: Vec<f32> = gpu.read(&tw.whole)?;
    let mut outside = whole.clone();
    for t in &tw.slices {
        let start = (t.offset_bytes() / 4) as usize;
        outside[start..start + t.len].fill(0.0);
    }
    if let Some(i) = outside.iter().position(|&x| x != 0.0) {
        return Err(crate::gpu::GpuError::Shape {
            label: "check w".into(),
            message: format!("the optimizer wrote {} between tensors, at {i}", outside[i]),
        });
    }
    Ok(worst)
}
