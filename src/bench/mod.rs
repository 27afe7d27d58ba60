//! `wgpu-fmnist bench`: per-kernel time of a model's training step (GPU timestamps where the
//! adapter has them, else wall time over many calls in one submission), GFLOP/s and GB/s,
//! then steady-state training and inference images/s.

use crate::data::{Images, Split};
use crate::gpu::timing::{resolve_timestamps, time_each};
use crate::gpu::{Dispatch, Gpu, GpuError, Result};
use crate::infer::GpuSplit;
use crate::kernels::augment::Workspace;
use crate::kernels::data::GatherConfig;
use crate::kernels::softmax_xent::metrics;
use crate::model::{ModelSpec, OptimizerKind};
use crate::net::{self, Buffers, Mode, Network, OptimizerConfig, PlanInputs, Source};
use std::time::Instant;

pub mod compare;
pub mod load;

#[derive(Clone, Debug)]
pub struct KernelTime {
    pub label: String,
    /// Per call, timed alone (the same dispatch several times in a row).
    pub seconds: f64,
    /// Per call within the recorded training step, between its neighbours (adapters with
    /// timestamps inside passes); None where that cannot be measured. Larger than
    /// `seconds` when running in sequence costs more: colder caches, or a driver that
    /// recompiles a shader when its bindings change (lavapipe inlines uniform values).
    pub seconds_in_step: Option<f64>,
    pub flops: f64,
    pub bytes: f64,
}

/// The GPU training step checked against `reference::train_step` before timing.
#[derive(Clone, Debug)]
pub struct Validation {
    pub batch: usize,
    /// Tensors compared: training logits, loss, every parameter gradient, inference logits.
    pub tensors: usize,
    /// Largest |gpu - ref| as a fraction of the allowed error (must be <= 1).
    pub worst_relative: f64,
}

/// What the CPU references compute for a validation: one training step and one inference
/// of a model on seeded random data. Computed once, compared on as many GPUs or kernel
/// variants as needed (`check` runs every variant against one).
pub struct Expected {
    pub batch: usize,
    params: Vec<crate::model::LayerParams>,
    eval_params: Vec<crate::model::LayerParams>,
    input: Vec<f32>,
    labels: Vec<u32>,
    train: crate::reference::StepReference,
    eval_logits: Vec<f32>,
}

const STEP: u32 = 5;
const SEED: u32 = 99;

/// The reference results for `spec` at `batch` (large models at batch 8 at most: the CPU
/// reference is slow; `Expected::batch` says which).
pub fn expected(spec: &ModelSpec, batch: usize) -> Expected {
    let per_image: u64 = (0..spec.layers.len()).map(|i| spec.flops(i)).sum();
    let batch = if per_image * 3 * batch as u64 > 3_000_000_000 {
        batch.min(8)
    } else {
        batch
    };
    let params = spec.init_params(3);
    let mut rng = crate::rng::Rng::new(17);
    let input = rng.vec(batch * 784, -1.0, 1.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
    let train = crate::reference::train_step(spec, &params, &input, &labels, STEP, SEED);
    // Inference with running statistics that are not the initial 0 and 1, so that batch
    // norm's evaluation path is really exercised.
    let mut eval_params = params.clone();
    for p in &mut eval_params {
        for m in &mut p.running_mean {
            *m = rng.uniform(-0.5, 0.5);
        }
        for v in &mut p.running_var {
            *v = rng.uniform(0.5, 2.0);
        }
    }
    let eval_logits = crate::reference::eval_forward(spec, &eval_params, &input);
    Expected {
        batch,
        params,
        eval_params,
        input,
        labels,
        train,
        eval_logits,
    }
}

/// Runs one training step (forward, loss, backward) and one inference of `spec` on random
/// data on the GPU and on the CPU references, and compares logits, loss, every parameter
/// gradient and the inference logits. Large models are checked at a smaller batch (the CPU
/// reference is slow); the result says which.
pub fn validate(gpu: &Gpu, spec: &ModelSpec, batch: usize) -> Result<Validation> {
    validate_against(gpu, spec, &expected(spec, batch))
}

/// `validate` with the reference results computed beforehand.
pub fn validate_against(gpu: &Gpu, spec: &ModelSpec, want: &Expected) -> Result<Validation> {
    let batch = want.batch;
    let net = Network::new(gpu, spec.clone(), &want.params)?;
    let bufs = Buffers::new(gpu, spec, batch, Mode::Train)?;
    gpu.write(bufs.input(), &want.input)?;
    gpu.write(&bufs.labels, &want.labels)?;
    gpu.write(&net.counter, &[STEP, 0])?;
    let metrics_t = gpu.zeros("validation metrics", metrics::LEN)?;
    let plan = net::gradient_step(gpu, &net, &bufs, batch, SEED, &metrics_t, 0.0)?;
    gpu.run(&plan.iter().collect::<Vec<_>>())?;

    let mut worst = 0f64;
    let mut check = |name: &str, got: &[f32], want: &[f32]| -> Result<()> {
        let scale = want
            .iter()
            .fold(0f64, |a, &v| a.max(v.abs() as f64))
            .max(1e-6);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (g as f64 - w as f64).abs();
            let allowed = 1e-6 + 1e-3 * scale + 1e-3 * (w as f64).abs();
            worst = worst.max(err / allowed);
            // f32 sums in another order than the f64 reference: 1e-3 of the tensor's scale,
            // and 1e-6 absolute for gradients that are zero but for rounding (a conv bias
            // followed by batch norm).
            if err.is_nan() || err > allowed {
                return Err(GpuError::Shape {
                    label: name.to_string(),
                    message: format!("GPU result differs from the CPU reference at [{i}]: {g} vs {w}; not timing a wrong kernel"),
                });
            }
        }
        Ok(())
    };
    let logits: Vec<f32> = gpu.read(bufs.logits())?;
    check(
        "logits",
        &logits[..want.train.logits.len()],
        &want.train.logits,
    )?;
    let m: Vec<f32> = gpu.read(&metrics_t)?;
    check(
        "loss",
        &[m[metrics::LOSS_SUM] / batch as f32],
        &[want.train.loss as f32],
    )?;
    let named: Vec<(String, &crate::net::Param)> = net.named_params().collect();
    for (name, g) in &want.train.grads {
        let p = named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .expect("parameter");
        let got: Vec<f32> = gpu.read(&p.grad)?;
        check(&format!("gradient of {name}"), &got[..g.len()], g)?;
    }

    let eval_net = Network::new(gpu, spec.clone(), &want.eval_params)?;
    let eval_bufs = Buffers::new(gpu, spec, batch, Mode::Eval)?;
    gpu.write(eval_bufs.input(), &want.input)?;
    let plan = net::forward(gpu, &eval_net, &eval_bufs, batch, SEED)?;
    gpu.run(&plan.iter().collect::<Vec<_>>())?;
    let got: Vec<f32> = gpu.read(eval_bufs.logits())?;
    check(
        "inference logits",
        &got[..want.eval_logits.len()],
        &want.eval_logits,
    )?;
    Ok(Validation {
        batch,
        tensors: 3 + want.train.grads.len(),
        worst_relative: worst,
    })
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub validation: Validation,
    pub kernels: Vec<KernelTime>,
    pub train_images_per_second: f64,
    pub infer_images_per_second: f64,
    pub step_seconds: f64,
    /// Dispatches recorded for one training step and for one inference batch: on a GPU each
    /// costs a few microseconds of launch whatever it computes.
    pub dispatches_per_train_step: usize,
    pub dispatches_per_infer_batch: usize,
    /// With `--augment`: the step without it and the augmented step's time over it (median
    /// of the ratios of windows timed alternately, so that the machine's drift cancels).
    pub augment_cost: Option<AugmentCost>,
    pub timing: &'static str,
    /// The share of all CPUs' time other processes took while the figures were timed
    /// (`load`; None where it cannot be read).
    pub others_cpu_share: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
pub struct AugmentCost {
    pub plain_step_seconds: f64,
    pub ratio: f64,
    pub pairs: usize,
}

impl BenchResult {
    /// Kernel times totalled per entry point, in order of first appearance, slowest first.
    pub fn per_entry_point(&self) -> Vec<KernelTime> {
        let mut rows: Vec<KernelTime> = Vec::new();
        for k in &self.kernels {
            let entry = k.label.split(' ').next().unwrap_or("").to_string();
            match rows.iter_mut().find(|x| x.label == entry) {
                Some(x) => {
                    x.seconds += k.seconds;
                    x.seconds_in_step =
                        x.seconds_in_step.zip(k.seconds_in_step).map(|(a, b)| a + b);
                    x.flops += k.flops;
                    x.bytes += k.bytes;
                }
                None => rows.push(KernelTime {
                    label: entry,
                    ..k.clone()
                }),
            }
        }
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        rows
    }
}

/// Seconds of each dispatch of `plan` recorded as one step, in one pass with timestamps
/// between the dispatches: the median over ROUNDS steps. None without timestamps inside
/// passes.
fn time_in_step(gpu: &Gpu, plan: &[&Dispatch], net: &Network) -> Result<Option<Vec<f64>>> {
    if !gpu
        .features
        .contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    {
        return Ok(None);
    }
    let n = plan.len() as u32 + 1;
    let mut rounds = Vec::new();
    for round in 0..ROUNDS + 1 {
        gpu.write(&net.counter, &[round as u32, 0])?;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench step"),
            ty: wgpu::QueryType::Timestamp,
            count: n,
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.write_timestamp(&set, 0);
            for (i, d) in plan.iter().enumerate() {
                d.record(&mut pass);
                pass.write_timestamp(&set, i as u32 + 1);
            }
        }
        let ticks = resolve_timestamps(gpu, encoder, &set, n)?;
        let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
        // The first round warms up.
        if round > 0 {
            rounds.push(
                ticks
                    .windows(2)
                    .map(|w| w[1].saturating_sub(w[0]) as f64 * period)
                    .collect::<Vec<f64>>(),
            );
        }
    }
    Ok(Some(
        (0..plan.len())
            .map(|i| median(rounds.iter().map(|r| r[i]).collect()))
            .collect(),
    ))
}

/// Benchmarks one training step of `spec` at `batch` on synthetic data.
pub fn run(
    gpu: &Gpu,
    spec: &ModelSpec,
    batch: usize,
    optimizer: OptimizerKind,
    augment: &crate::kernels::augment::Augment,
    seconds: f64,
) -> Result<BenchResult> {
    net::check_model(gpu, spec)?;
    net::check_batch(gpu, spec, batch, "--batch-size")?;
    let need = net::MemoryNeed::of(spec, batch, batch, 0);
    net::check_memory(
        gpu,
        &format!("a training step at batch {batch}"),
        need,
        "--batch-size",
    )?;
    let validation = validate(gpu, spec, batch)?;
    let net = Network::new(gpu, spec.clone(), &spec.init_params(1))?;
    // Synthetic images: what is computed does not depend on the pixel values (a bounded
    // set: the indices below cycle over it).
    let count = (batch * 8).clamp(1024, 65536);
    let mut rng = crate::rng::Rng::new(5);
    let split = Split {
        images: Images {
            count,
            rows: 28,
            cols: 28,
            pixels: (0..count * 784).map(|_| rng.below(256) as u8).collect(),
        },
        labels: (0..count).map(|_| rng.below(10) as u8).collect(),
    };
    let gsplit = GpuSplit::upload(gpu, "bench", &split)?;
    // Indices wrap so any number of steps has examples.
    let indices: Vec<u32> = (0..count as u32).cycle().take(count * 64).collect();
    let indices = gpu.upload("bench indices", &indices)?;
    let metrics_t = gpu.zeros("bench metrics", metrics::LEN)?;
    let lr = gpu.upload("lr", &[1e-4f32])?;
    let opt = OptimizerConfig {
        kind: optimizer,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
        l1: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let bufs = Buffers::new(gpu, spec, batch, Mode::Train)?;
    let augment_ws = match augment.is_on() {
        true => Some(Workspace::new(gpu, batch, &split.images.pixels)?),
        false => None,
    };
    let inputs = PlanInputs {
        source: Source {
            images: &gsplit.images,
            labels: &gsplit.labels,
            indices: &indices,
            counter: &net.counter,
        },
        gather: GatherConfig {
            batch,
            mean: 0.5,
            std: 0.5,
            flip: false,
            max_shift: 0,
            seed: 0,
            stride: batch,
        },
        metrics: &metrics_t,
        dropout_seed: 1,
        label_smoothing: 0.0,
        augment: augment_ws.as_ref().map(|ws| (*augment, ws)),
    };
    let plan = net::train_step(gpu, &net, &bufs, &inputs, &opt, &lr, batch)?;
    let refs: Vec<&Dispatch> = plan.iter().collect();
    // Shared machines are noisy: the median of several rounds, for each kernel; and what
    // else ran meanwhile, reported with the figures.
    let before = load::sample();
    let mut rounds = Vec::new();
    let mut timing = "";
    for _ in 0..ROUNDS {
        let (t, how) = time_each(gpu, &refs, 5)?;
        rounds.push(t);
        timing = how;
    }
    let times: Vec<f64> = (0..refs.len())
        .map(|i| median(rounds.iter().map(|r| r[i]).collect()))
        .collect();
    let in_step = time_in_step(gpu, &refs, &net)?;
    let kernels = plan
        .iter()
        .zip(&times)
        .enumerate()
        .map(|(i, (d, &t))| KernelTime {
            label: d.label().to_string(),
            seconds: t,
            seconds_in_step: in_step.as_ref().map(|v| v[i]),
            flops: d.flops(),
            bytes: d.bytes(),
        })
        .collect();

    // End to end: steps recorded in bulk, reset the counter now and then so indices stay valid.
    let (train_ips, augment_cost) = match inputs.augment {
        None => (steady_rate(gpu, &plan, batch, seconds, &net)?, None),
        Some(_) => {
            let plain_inputs = PlanInputs {
                source: inputs.source,
                augment: None,
                ..inputs
            };
            let plain = net::train_step(gpu, &net, &bufs, &plain_inputs, &opt, &lr, batch)?;
            let (ips, cost) = alternating_rates(gpu, &plain, &plan, batch, seconds, &net)?;
            (ips, Some(cost))
        }
    };
    let eval_bufs = Buffers::new(gpu, spec, batch, Mode::Eval)?;
    let eval_counter = crate::kernels::optim::step_counter(gpu, "eval counter")?;
    let eval_inputs = PlanInputs {
        source: Source {
            counter: &eval_counter,
            ..inputs.source
        },
        ..inputs
    };
    let eval_plan = net::eval_step(gpu, &net, &eval_bufs, &eval_inputs, batch, None)?;
    let infer_ips = steady_rate(gpu, &eval_plan, batch, seconds / 2.0, &net)?;
    let others_cpu_share = before
        .zip(load::sample())
        .and_then(|(a, b)| load::others_share(&a, &b));
    let step_seconds = batch as f64 / train_ips;
    Ok(BenchResult {
        validation,
        dispatches_per_train_step: plan.len(),
        dispatches_per_infer_batch: eval_plan.len(),
        kernels,
        train_images_per_second: train_ips,
        infer_images_per_second: infer_ips,
        step_seconds,
        augment_cost,
        others_cpu_share,
        timing,
    })
}

/// Seconds `steps` steps of `plan` take, recorded in one submission (the step counter reset
/// first so the indices stay valid).
fn time_steps(gpu: &Gpu, net: &Network, plan: &[Dispatch], steps: usize) -> Result<f64> {
    gpu.write(&net.counter, &[0u32, 0])?;
    gpu.sync()?;
    let t = Instant::now();
    gpu.queue
        .submit([gpu.encode((0..steps).flat_map(|_| plan)).finish()]);
    gpu.sync()?;
    Ok(t.elapsed().as_secs_f64())
}

fn steady_rate(
    gpu: &Gpu,
    plan: &[Dispatch],
    batch: usize,
    seconds: f64,
    net: &Network,
) -> Result<f64> {
    let submit = |steps: usize| time_steps(gpu, net, plan, steps);
    submit(2)?; // warm-up
    let probe = submit(4)? / 4.0;
    // The time split into ROUNDS windows; the median window's rate.
    let window = seconds / ROUNDS as f64;
    let steps = ((window / probe.max(1e-6)) as usize).clamp(4, 60);
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        rates.push((steps * batch) as f64 / submit(steps)?);
    }
    Ok(median(rates))
}

/// The rate of `plan` and its cost over `plain` (the same step without augmentation): windows
/// of each in turn, and the median of the pairs' ratios, which a machine whose speed drifts
/// over seconds (shared CPUs) leaves alone where separate runs do not.
fn alternating_rates(
    gpu: &Gpu,
    plain: &[Dispatch],
    plan: &[Dispatch],
    batch: usize,
    seconds: f64,
    net: &Network,
) -> Result<(f64, AugmentCost)> {
    let submit = |p: &[Dispatch], steps: usize| time_steps(gpu, net, p, steps);
    submit(plain, 2)?;
    submit(plan, 2)?;
    let probe = submit(plan, 4)? / 4.0;
    let pairs = 2 * ROUNDS + 1;
    let window = seconds / (2 * pairs) as f64;
    let steps = ((window / probe.max(1e-6)) as usize).clamp(4, 60);
    let (mut plain_steps, mut steps_aug, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let a = submit(plain, steps)? / steps as f64;
        let b = submit(plan, steps)? / steps as f64;
        plain_steps.push(a);
        steps_aug.push(b);
        ratios.push(b / a);
    }
    let cost = AugmentCost {
        plain_step_seconds: median(plain_steps),
        ratio: median(ratios),
        pairs,
    };
    Ok((batch as f64 / median(steps_aug), cost))
}

/// Timing rounds whose median the bench reports.
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
