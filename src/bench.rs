//! `wgpu-fmnist bench`: per-kernel time of a model's training step (GPU timestamps where the
//! adapter has them, else wall time over many calls in one submission), GFLOP/s and GB/s,
//! then steady-state training and inference images/s.

use crate::data::{Images, Split};
use crate::gpu::{Dispatch, Gpu, GpuError, Result};
use crate::kernels::data::GatherConfig;
use crate::kernels::softmax_xent::metrics;
use crate::model::{ModelSpec, OptimizerKind};
use crate::net::{self, Buffers, Mode, Network, OptimizerConfig, PlanInputs, Source};
use crate::train::GpuSplit;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct KernelTime {
    pub label: String,
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub kernels: Vec<KernelTime>,
    pub train_images_per_second: f64,
    pub infer_images_per_second: f64,
    pub step_seconds: f64,
    pub timing: &'static str,
}

/// Seconds per call of each dispatch, timed `reps` calls at a time.
pub fn time_each(gpu: &Gpu, dispatches: &[&Dispatch], reps: u32) -> Result<(Vec<f64>, &'static str)> {
    if gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Ok((time_with_timestamps(gpu, dispatches, reps)?, "gpu timestamps"));
    }
    let mut out = Vec::new();
    for d in dispatches {
        gpu.run(&[d])?; // warm
        let t = Instant::now();
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..reps {
                d.record(&mut pass);
            }
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.sync()?;
        out.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok((out, "wall clock"))
}

fn time_with_timestamps(gpu: &Gpu, dispatches: &[&Dispatch], reps: u32) -> Result<Vec<f64>> {
    let n = dispatches.len() as u32;
    let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("bench"), ty: wgpu::QueryType::Timestamp, count: 2 * n });
    let bytes = 16 * n as u64;
    let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps staging"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    for (i, d) in dispatches.iter().enumerate() {
        // One warm-up call outside the timed pass.
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            d.record(&mut pass);
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(d.label()),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            }),
        });
        for _ in 0..reps {
            d.record(&mut pass);
        }
    }
    encoder.resolve_query_set(&set, 0..2 * n, &resolve, 0);
    encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
    gpu.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.sync()?;
    let err = |m: String| GpuError::Readback { label: "timestamps".into(), message: m };
    rx.recv().map_err(|e| err(e.to_string()))?.map_err(|e| err(e.to_string()))?;
    let view = staging.slice(..).get_mapped_range().map_err(|e| err(e.to_string()))?;
    let ticks: Vec<u64> = bytemuck::cast_slice(&view).to_vec();
    drop(view);
    staging.unmap();
    let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
    Ok((0..n as usize).map(|i| ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / reps as f64).collect())
}

/// Benchmarks one training step of `spec` at `batch` on synthetic data.
pub fn run(gpu: &Gpu, spec: &ModelSpec, batch: usize, optimizer: OptimizerKind, seconds: f64) -> Result<BenchResult> {
    let net = Network::new(gpu, spec.clone(), &spec.init_params(1))?;
    // Synthetic images: what is computed does not depend on the pixel values.
    let count = (batch * 8).max(1024);
    let mut rng = crate::rng::Rng::new(5);
    let split = Split {
        images: Images { count, rows: 28, cols: 28, pixels: (0..count * 784).map(|_| rng.below(256) as u8).collect() },
        labels: (0..count).map(|_| rng.below(10) as u8).collect(),
    };
    let gsplit = GpuSplit::upload(gpu, "bench", &split)?;
    // Indices wrap so any number of steps has examples.
    let indices: Vec<u32> = (0..count as u32).cycle().take(count * 64).collect();
    let indices = gpu.upload("bench indices", &indices)?;
    let metrics_t = gpu.zeros("bench metrics", metrics::LEN)?;
    let lr = gpu.upload("lr", &[1e-4f32])?;
    let opt = OptimizerConfig { kind: optimizer, momentum: 0.9, nesterov: false, weight_decay: 0.0, l1: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let bufs = Buffers::new(gpu, spec, batch, Mode::Train)?;
    let inputs = PlanInputs {
        source: Source { images: &gsplit.images, labels: &gsplit.labels, indices: &indices, counter: &net.counter },
        gather: GatherConfig { batch, mean: 0.5, std: 0.5, flip: false, max_shift: 0, seed: 0, stride: batch },
        metrics: &metrics_t,
        dropout_seed: 1,
    };
    let plan = net::train_step(gpu, &net, &bufs, &inputs, &opt, &lr, batch)?;
    let refs: Vec<&Dispatch> = plan.iter().collect();
    let (times, timing) = time_each(gpu, &refs, 5)?;
    let kernels = plan
        .iter()
        .zip(&times)
        .map(|(d, &t)| KernelTime { label: d.label().to_string(), seconds: t, flops: d.flops(), bytes: d.bytes() })
        .collect();

    // End to end: steps recorded in bulk, reset the counter now and then so indices stay valid.
    let train_ips = steady_rate(gpu, &plan, batch, seconds, &net)?;
    let eval_bufs = Buffers::new(gpu, spec, batch, Mode::Eval)?;
    let eval_counter = gpu.upload("eval counter", &[0u32, 0])?;
    let eval_inputs = PlanInputs { source: Source { counter: &eval_counter, ..inputs.source }, ..inputs };
    let eval_plan = net::eval_step(gpu, &net, &eval_bufs, &eval_inputs, batch)?;
    let infer_ips = steady_rate(gpu, &eval_plan, batch, seconds / 2.0, &net)?;
    let step_seconds = batch as f64 / train_ips;
    Ok(BenchResult { kernels, train_images_per_second: train_ips, infer_images_per_second: infer_ips, step_seconds, timing })
}

fn steady_rate(gpu: &Gpu, plan: &[Dispatch], batch: usize, seconds: f64, net: &Network) -> Result<f64> {
    let submit = |steps: usize| -> Result<f64> {
        gpu.write(&net.counter, &[0u32, 0])?;
        gpu.sync()?;
        let t = Instant::now();
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..steps {
                for d in plan {
                    d.record(&mut pass);
                }
            }
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.sync()?;
        Ok(t.elapsed().as_secs_f64())
    };
    submit(2)?; // warm-up
    let probe = submit(4)? / 4.0;
    let steps = ((seconds / probe.max(1e-6)) as usize).clamp(4, 60);
    let t = submit(steps)?;
    Ok((steps * batch) as f64 / t)
}
