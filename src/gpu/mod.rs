//! GPU context: adapter selection, device creation within the adapter's limits, buffer
//! helpers, a pipeline cache and typed errors. Everything the kernels need from wgpu goes
//! through here so that every failure carries context a user can act on.

mod adapter;
mod buffers;
mod caps;
mod error;
mod landing;
mod pipelines;
pub mod timing;

pub use adapter::{
    device_memory, list_adapters, require_adapters, AdapterRequest, AdapterSummary, Backend,
};
pub use buffers::{Arena, Bindable, Tensor};
pub use caps::{Caps, Variant};
pub(crate) use error::gib;
pub use error::{GpuError, Result};
pub use pipelines::{
    Dispatch, Shader, AUGMENT, BATCHNORM, BATCHNORM_PLANES, CONV2D, CONV2D_POOL, CONV2D_SUBGROUP,
    CONV2D_TILED, DATA, DROPOUT, ELEMENTWISE, MATMUL, MATMUL_SUBGROUP, OPTIM, POOL, SHADERS,
    SOFTMAX_XENT,
};

use std::sync::{Arc, Mutex};

/// A device, its queue and the pipelines compiled for it.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (what we asked for, not the adapter's best).
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The adapter's largest device-local memory heap (`adapter::device_memory`): what a
    /// run's buffers must fit in together. None where the backend does not report it.
    pub device_memory: Option<u64>,
    /// What the kernels may use here (and `--variant`); every kernel choice reads it.
    pub caps: Caps,
    pipelines: pipelines::PipelineCache,
    /// The kernels' measured choices for this device (`kernels::tune::Tuner`), which every
    /// dispatch wrapper reaches through `&Gpu`. Opaque here: the device does not know the
    /// kernel families. None: `kernels::select`'s fixed order.
    pub(crate) kernel_choices: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// wgpu reports errors outside error scopes through a callback; the default one panics.
    /// We keep the first such error here and turn it into a `GpuError` at the next sync.
    uncaptured: Arc<Mutex<Option<String>>>,
}

/// What the device's memory allocator holds (`Gpu::memory`): what a run reports each epoch
/// so that growth (a leak) is visible, and what the flat-memory tests compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GpuMemory {
    /// Bytes in live allocations (buffers).
    pub allocated_bytes: u64,
    /// Bytes of the memory blocks the allocator has taken from the driver.
    pub reserved_bytes: u64,
    /// Live allocations.
    pub allocations: usize,
}

/// Storage buffers one kernel binds at most (batch-norm backward uses 8).
const STORAGE_BUFFERS_NEEDED: u32 = 8;

impl Gpu {
    /// Picks an adapter as `request` says and creates a device on it.
    pub fn new(request: &AdapterRequest) -> Result<Gpu> {
        Self::new_with(request, |_| {})
    }

    /// As `new`, with the requested limits adjusted by `adjust` (tests shrink the
    /// workgroup-count limit so that small shapes need 2-D grids).
    pub fn new_with(
        request: &AdapterRequest,
        adjust: impl FnOnce(&mut wgpu::Limits),
    ) -> Result<Gpu> {
        adapter::quiet_driver_noise();
        let adapter = adapter::select(request)?;
        Self::from_adapter_with(adapter, adjust)?.prefer(request.variant)
    }

    /// Uses kernel variant `v` wherever it applies (`--variant`); an error if this adapter
    /// can never run it.
    pub fn prefer(mut self, v: Variant) -> Result<Gpu> {
        self.caps
            .supports(v)
            .map_err(|why| GpuError::VariantUnsupported {
                variant: v.to_string(),
                adapter: self.info.name.clone(),
                why,
            })?;
        self.caps.prefer = v;
        Ok(self)
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        Self::from_adapter_with(adapter, |_| {})
    }

    /// `from_adapter_with`, blocking on the device's creation (native).
    pub fn from_adapter_with(
        adapter: wgpu::Adapter,
        adjust: impl FnOnce(&mut wgpu::Limits),
    ) -> Result<Gpu> {
        pollster::block_on(Self::from_adapter_async(adapter, adjust))
    }

    /// Creates the device on `adapter` within the limits the kernels need (with `adjust`
    /// applied), awaiting it: a browser creates devices asynchronously.
    pub async fn from_adapter_async(
        adapter: wgpu::Adapter,
        adjust: impl FnOnce(&mut wgpu::Limits),
    ) -> Result<Gpu> {
        let info = adapter.get_info();
        let available = adapter.limits();
        if available.max_storage_buffers_per_shader_stage < STORAGE_BUFFERS_NEEDED {
            return Err(GpuError::AdapterTooSmall {
                adapter: info.name.clone(),
                what: format!(
                    "{} storage buffers per shader stage (it has {})",
                    STORAGE_BUFFERS_NEEDED, available.max_storage_buffers_per_shader_stage
                ),
            });
        }
        // Ask for what the trainer needs: the defaults, plus the largest storage binding and
        // buffer the adapter offers (the data set as u8 is 47 MB; large batches of VGG
        // activations exceed the 128 MiB default).
        let mut limits = wgpu::Limits::downlevel_defaults();
        limits.max_storage_buffers_per_shader_stage = STORAGE_BUFFERS_NEEDED;
        limits.max_storage_buffer_binding_size = available.max_storage_buffer_binding_size;
        limits.max_buffer_size = available.max_buffer_size;
        // --augment samples the training images from a texture atlas (kernels::augment::Atlas).
        limits.max_texture_dimension_2d = available.max_texture_dimension_2d;
        limits.max_texture_array_layers = available.max_texture_array_layers;
        limits.max_compute_workgroup_storage_size =
            available.max_compute_workgroup_storage_size.min(32 << 10);
        limits.max_compute_invocations_per_workgroup =
            available.max_compute_invocations_per_workgroup.min(256);
        limits.max_compute_workgroup_size_x = available.max_compute_workgroup_size_x.min(256);
        limits.max_compute_workgroup_size_y = available.max_compute_workgroup_size_y.min(256);
        limits.max_compute_workgroups_per_dimension =
            available.max_compute_workgroups_per_dimension;
        limits.max_bind_groups = available.max_bind_groups.min(4);
        limits.max_bindings_per_bind_group = available.max_bindings_per_bind_group.min(640);
        limits.max_uniform_buffers_per_shader_stage =
            available.max_uniform_buffers_per_shader_stage.min(12);
        adjust(&mut limits);
        let check = limits.check_limits(&available);
        if !check {
            return Err(GpuError::AdapterTooSmall {
                adapter: info.name.clone(),
                what: "the compute limits this program needs".into(),
            });
        }
        // Optional: timestamps for `bench`, subgroups for the kernels' subgroup variants.
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-fmnist"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;

        let uncaptured: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(error.to_string());
            }
        }));
        let caps = Caps {
            software: info.device_type == wgpu::DeviceType::Cpu,
            subgroups_of_8: features.contains(wgpu::Features::SUBGROUP)
                && info.subgroup_min_size == 8
                && info.subgroup_max_size == 8,
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            prefer: Variant::Auto,
        };
        Ok(Gpu {
            device_memory: adapter::device_memory(&adapter),
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            caps,
            pipelines: pipelines::PipelineCache::default(),
            kernel_choices: None,
            uncaptured,
        })
    }

    /// "name (backend, type)", as the CLI reports the adapter it runs on.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
    }

    /// Device memory in use now, from the allocator's report (None where the backend has
    /// none). Waits for submitted work first, since wgpu frees dropped buffers only then.
    pub fn memory(&self) -> Option<GpuMemory> {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let report = self.device.generate_allocator_report()?;
        Some(GpuMemory {
            allocated_bytes: report.total_allocated_bytes,
            reserved_bytes: report.total_reserved_bytes,
            allocations: report.allocations.len(),
        })
    }

    /// Waits for all submitted work, then reports any error wgpu raised outside a scope.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Lost {
                context: "waiting for the GPU".into(),
                message: e.to_string(),
            })?;
        self.take_uncaptured("GPU work")
    }

    pub(crate) fn take_uncaptured(&self, context: &str) -> Result<()> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(GpuError::Validation {
                context: context.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch
    /// into a `GpuError` naming `context`.
    pub fn scoped<T>(&self, context: impl FnOnce() -> String, f: impl FnOnce() -> T) -> Result<T> {
        // A browser answers an error scope only once control returns to its event loop:
        // blocking on one would never return. There the device's uncaptured-error handler
        // catches the error instead, and the next readback reports it (`take_uncaptured`).
        #[cfg(target_arch = "wasm32")]
        {
            let _ = context;
            Ok(f())
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.scoped_blocking(context, f)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn scoped_blocking<T>(
        &self,
        context: impl FnOnce() -> String,
        f: impl FnOnce() -> T,
    ) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v {
            return Err(GpuError::Validation {
                context: context(),
                message: e.to_string(),
            });
        }
        if let Some(e) = o {
            return Err(GpuError::OutOfMemory {
                context: context(),
                message: e.to_string(),
            });
        }
        Ok(value)
    }

    /// Records `dispatches` in order into one compute pass of a new encoder: how every
    /// plan, one step or many, reaches the GPU.
    pub fn encode<'a>(
        &self,
        dispatches: impl IntoIterator<Item = &'a Dispatch>,
    ) -> wgpu::CommandEncoder {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        encoder
    }

    /// Records `dispatches` into one compute pass, submits and waits. For tests and one-off
    /// work; the trainer records many steps per submission instead.
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        self.queue
            .submit([self.encode(dispatches.iter().copied()).finish()]);
        let names: Vec<&str> = dispatches.iter().map(|d| d.label()).collect();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Lost {
                context: names.join(", "),
                message: e.to_string(),
            })?;
        self.take_uncaptured(&names.join(", "))
    }
}
