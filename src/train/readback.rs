//! Non-blocking readback of the GPU metrics: after each submitted chunk of steps the metrics
//! buffer is copied into one of a small ring of staging buffers and mapped asynchronously.
//! The host picks up whichever copies have landed; it only waits when the ring is full,
//! which also bounds how far recording runs ahead of the GPU.

use crate::gpu::{Gpu, GpuError, Result, Tensor};
use std::sync::{Arc, Mutex};

struct Slot {
    staging: wgpu::Buffer,
    /// Set by the map callback.
    ready: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>,
    /// The step count the copy was taken after, while in flight.
    in_flight: Option<(usize, wgpu::SubmissionIndex)>,
}

/// Metrics as copied after `steps` steps of the epoch.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub steps: usize,
    pub values: [f32; crate::kernels::softmax_xent::metrics::LEN],
}

pub struct MetricsRing {
    slots: Vec<Slot>,
    next: usize,
}

impl MetricsRing {
    pub fn new(gpu: &Gpu, depth: usize) -> MetricsRing {
        let slots = (0..depth)
            .map(|i| Slot {
                staging: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("metrics staging {i}")),
                    size: (crate::kernels::softmax_xent::metrics::LEN * 4) as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                ready: Arc::new(Mutex::new(None)),
                in_flight: None,
            })
            .collect();
        MetricsRing { slots, next: 0 }
    }

    /// Submits `encoder` with a copy of `metrics` appended, to be read after `steps` steps.
    /// Waits first if the slot it needs is still in flight; returns the snapshots that landed.
    pub fn submit(
        &mut self,
        gpu: &Gpu,
        mut encoder: wgpu::CommandEncoder,
        metrics: &Tensor,
        steps: usize,
    ) -> Result<Vec<Snapshot>> {
        let mut landed = Vec::new();
        let i = self.next;
        if self.slots[i].in_flight.is_some() {
            landed.extend(self.wait_slot(gpu, i)?);
        }
        let slot = &mut self.slots[i];
        encoder.copy_buffer_to_buffer(&metrics.buffer, 0, &slot.staging, 0, slot.staging.size());
        let index = gpu.queue.submit([encoder.finish()]);
        let ready = slot.ready.clone();
        *ready.lock().unwrap_or_else(|p| p.into_inner()) = None;
        slot.staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                *ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        slot.in_flight = Some((steps, index));
        self.next = (i + 1) % self.slots.len();
        landed.extend(self.poll(gpu)?);
        Ok(landed)
    }

    /// Snapshots that have landed, without waiting.
    pub fn poll(&mut self, gpu: &Gpu) -> Result<Vec<Snapshot>> {
        let _ = gpu.device.poll(wgpu::PollType::Poll);
        gpu.take_uncaptured("training step")?;
        let mut out = Vec::new();
        for i in self.order() {
            let done = self.slots[i]
                .ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if done && self.slots[i].in_flight.is_some() {
                out.push(self.take(i)?);
            }
        }
        Ok(out)
    }

    /// Waits for everything in flight; returns the snapshots in step order.
    pub fn drain(&mut self, gpu: &Gpu) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for i in self.order() {
            if self.slots[i].in_flight.is_some() {
                out.extend(self.wait_slot(gpu, i)?);
            }
        }
        Ok(out)
    }

    /// Slot indices from oldest to newest submission.
    fn order(&self) -> Vec<usize> {
        let n = self.slots.len();
        (0..n).map(|k| (self.next + k) % n).collect()
    }

    fn wait_slot(&mut self, gpu: &Gpu, i: usize) -> Result<Option<Snapshot>> {
        let Some((_, index)) = self.slots[i].in_flight.clone() else {
            return Ok(None);
        };
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::Lost {
                context: "training".into(),
                message: e.to_string(),
            })?;
        gpu.take_uncaptured("training step")?;
        self.take(i).map(Some)
    }

    fn take(&mut self, i: usize) -> Result<Snapshot> {
        let slot = &mut self.slots[i];
        let (steps, _) = slot.in_flight.take().expect("in flight");
        let status = slot.ready.lock().unwrap_or_else(|p| p.into_inner()).take();
        match status {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(GpuError::Readback {
                    label: "metrics".into(),
                    message: e.to_string(),
                })
            }
            None => {
                return Err(GpuError::Readback {
                    label: "metrics".into(),
                    message: "map did not complete".into(),
                })
            }
        }
        let view = slot
            .staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Readback {
                label: "metrics".into(),
                message: e.to_string(),
            })?;
        let mut values = [0f32; crate::kernels::softmax_xent::metrics::LEN];
        values.copy_from_slice(bytemuck::cast_slice(&view));
        drop(view);
        slot.staging.unmap();
        Ok(Snapshot { steps, values })
    }
}
