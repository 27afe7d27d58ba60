//! Non-blocking readback of the GPU metrics: after each submitted chunk of steps the metrics
//! buffer is copied into one of a small ring of staging buffers and mapped asynchronously.
//! The host picks up whichever copies have landed; it only waits when the ring is full,
//! which also bounds how far recording runs ahead of the GPU.

use crate::gpu::{Gpu, GpuError, Result, Tensor};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use web_time::Instant;

/// How long a map callback may lag behind its finished submission before the readback fails.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(60);

/// What the map callback reported; None until it ran.
type MapStatus = Option<std::result::Result<(), wgpu::BufferAsyncError>>;

/// The map callback's result, with a condition variable to wait for it (native) and the
/// waker of a task awaiting it (a browser, whose callbacks run from its event loop).
#[derive(Default)]
struct MapSignal {
    status: Mutex<MapStatus>,
    landed: Condvar,
    waker: Mutex<Option<std::task::Waker>>,
}

impl MapSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, MapStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, r: std::result::Result<(), wgpu::BufferAsyncError>) {
        *self.lock() = Some(r);
        self.landed.notify_all();
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }

    /// Ready once the callback has run.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    async fn landed(&self) {
        std::future::poll_fn(|cx| {
            // The waker first: a callback between the check and the store would be lost.
            *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            match self.lock().is_some() {
                true => std::task::Poll::Ready(()),
                false => std::task::Poll::Pending,
            }
        })
        .await
    }

    /// Waits for the callback after its submission finished. Another thread polling the same
    /// device may have collected the callback and fire it a moment later, so it is not
    /// necessarily there when our own poll returns; keep polling until it lands.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn wait(&self, poll: impl Fn(), deadline: Duration) {
        let start = Instant::now();
        let mut status = self.lock();
        while status.is_none() && start.elapsed() < deadline {
            drop(status);
            poll();
            status = self.lock();
            if status.is_none() {
                status = self
                    .landed
                    .wait_timeout(status, Duration::from_millis(5))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

struct Slot {
    staging: wgpu::Buffer,
    /// Set by the map callback.
    ready: Arc<MapSignal>,
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
                ready: Arc::new(MapSignal::default()),
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
        encoder: wgpu::CommandEncoder,
        metrics: &Tensor,
        steps: usize,
    ) -> Result<Vec<Snapshot>> {
        pollster::block_on(self.submit_async(gpu, encoder, metrics, steps))
    }

    /// `submit`, awaiting the slot (a browser's wait yields to its event loop).
    pub async fn submit_async(
        &mut self,
        gpu: &Gpu,
        mut encoder: wgpu::CommandEncoder,
        metrics: &Tensor,
        steps: usize,
    ) -> Result<Vec<Snapshot>> {
        let mut landed = Vec::new();
        let i = self.next;
        if self.slots[i].in_flight.is_some() {
            landed.extend(self.wait_slot(gpu, i).await?);
        }
        let slot = &mut self.slots[i];
        metrics.copy_into(&mut encoder, &slot.staging, slot.staging.size());
        let index = gpu.queue.submit([encoder.finish()]);
        let ready = slot.ready.clone();
        *ready.lock() = None;
        slot.staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| ready.set(r));
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
            let done = self.slots[i].ready.lock().is_some();
            if done && self.slots[i].in_flight.is_some() {
                out.push(self.take(i)?);
            }
        }
        Ok(out)
    }

    /// Waits for everything in flight; returns the snapshots in step order.
    pub fn drain(&mut self, gpu: &Gpu) -> Result<Vec<Snapshot>> {
        pollster::block_on(self.drain_async(gpu))
    }

    /// `drain`, awaiting each slot.
    pub async fn drain_async(&mut self, gpu: &Gpu) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for i in self.order() {
            if self.slots[i].in_flight.is_some() {
                out.extend(self.wait_slot(gpu, i).await?);
            }
        }
        Ok(out)
    }

    /// Slot indices from oldest to newest submission.
    fn order(&self) -> Vec<usize> {
        let n = self.slots.len();
        (0..n).map(|k| (self.next + k) % n).collect()
    }

    async fn wait_slot(&mut self, gpu: &Gpu, i: usize) -> Result<Option<Snapshot>> {
        let Some((_, index)) = self.slots[i].in_flight.clone() else {
            return Ok(None);
        };
        #[cfg(target_arch = "wasm32")]
        {
            let _ = index;
            self.slots[i].ready.landed().await;
            gpu.take_uncaptured("training step")?;
            return self.take(i).map(Some);
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.wait_slot_blocking(gpu, i, index)
    }

    /// Natively: waits for the submission, then for its callback (polling meanwhile).
    #[cfg(not(target_arch = "wasm32"))]
    fn wait_slot_blocking(
        &mut self,
        gpu: &Gpu,
        i: usize,
        index: wgpu::SubmissionIndex,
    ) -> Result<Option<Snapshot>> {
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
        self.slots[i].ready.wait(
            || {
                let _ = gpu.device.poll(wgpu::PollType::Poll);
            },
            CALLBACK_DEADLINE,
        );
        self.take(i).map(Some)
    }

    fn take(&mut self, i: usize) -> Result<Snapshot> {
        let slot = &mut self.slots[i];
        let (steps, _) = slot.in_flight.take().expect("in flight");
        let status = slot.ready.lock().take();
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
                    message: format!(
                        "the map callback did not arrive within {} s of its submission finishing",
                        CALLBACK_DEADLINE.as_secs()
                    ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_fired_late_by_another_thread_is_waited_for() {
        // As when another thread's device poll collected our callback: it arrives after
        // our own wait for the submission returned.
        let signal = Arc::new(MapSignal::default());
        // Before the spawn: the callback lands at least 50 ms after this.
        let start = Instant::now();
        let late = {
            let signal = signal.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                signal.set(Ok(()));
            })
        };
        let polls = std::cell::Cell::new(0);
        signal.wait(|| polls.set(polls.get() + 1), Duration::from_secs(10));
        assert!(matches!(*signal.lock(), Some(Ok(()))));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(polls.get() >= 1, "the device is polled while waiting");
        late.join().unwrap();
    }

    #[test]
    fn a_callback_that_never_comes_gives_up_at_the_deadline() {
        let signal = MapSignal::default();
        let start = Instant::now();
        signal.wait(|| {}, Duration::from_millis(30));
        assert!(signal.lock().is_none());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(30) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }
}
