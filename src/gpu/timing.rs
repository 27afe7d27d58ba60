//! Timing dispatches on the device: with GPU timestamps where the adapter has them, by the
//! wall clock around a submission otherwise. `bench` reports these times and the kernel
//! tuner (`kernels::tune`) chooses variants by them.

use super::{Dispatch, Gpu, GpuError, Result};
use web_time::Instant;

/// Seconds per call of each dispatch, timed `reps` calls at a time.
pub fn time_each(
    gpu: &Gpu,
    dispatches: &[&Dispatch],
    reps: u32,
) -> Result<(Vec<f64>, &'static str)> {
    if gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Ok((
            time_with_timestamps(gpu, dispatches, reps)?,
            "gpu timestamps",
        ));
    }
    let mut out = Vec::new();
    for d in dispatches {
        gpu.run(&[d])?; // warm
        let t = Instant::now();
        gpu.queue
            .submit([gpu.encode(std::iter::repeat_n(*d, reps as usize)).finish()]);
        gpu.sync()?;
        out.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    Ok((out, "wall clock"))
}

/// Resolves `count` timestamps of `set` after the work recorded in `encoder`, submits it
/// and reads them back.
pub fn resolve_timestamps(
    gpu: &Gpu,
    mut encoder: wgpu::CommandEncoder,
    set: &wgpu::QuerySet,
    count: u32,
) -> Result<Vec<u64>> {
    let bytes = 8 * count as u64;
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
    encoder.resolve_query_set(set, 0..count, &resolve, 0);
    encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
    gpu.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.sync()?;
    let err = |m: String| GpuError::Readback {
        label: "timestamps".into(),
        message: m,
    };
    rx.recv()
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
    let view = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| err(e.to_string()))?;
    let ticks: Vec<u64> = bytemuck::cast_slice(&view).to_vec();
    drop(view);
    staging.unmap();
    Ok(ticks)
}

fn time_with_timestamps(gpu: &Gpu, dispatches: &[&Dispatch], reps: u32) -> Result<Vec<f64>> {
    let n = dispatches.len() as u32;
    let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("bench"),
        ty: wgpu::QueryType::Timestamp,
        count: 2 * n,
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
    let ticks = resolve_timestamps(gpu, encoder, &set, 2 * n)?;
    let period = gpu.queue.get_timestamp_period() as f64 * 1e-9;
    Ok((0..n as usize)
        .map(|i| ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / reps as f64)
        .collect())
}
