//! Storage buffers ("tensors"), uniforms and readback, with size checks against the
//! device limits so an oversize request is an error instead of a lost device.

use super::{Gpu, GpuError, Result};
use wgpu::util::DeviceExt;

/// A storage buffer of `len` 4-byte elements (f32 or u32; the kernels know which), or a
/// slice of one (`Gpu::arena`). Its binding is rounded up to a multiple of 4 elements
/// (16 bytes) so kernels may view any tensor as `array<vec4<f32>>`; the padding is
/// zero-initialised and never read as data.
///
/// The buffer is private: kernels bind a tensor through [`Bindable`], copies go through
/// `Gpu`'s methods, so nothing can forget a slice's offset.
pub struct Tensor {
    buffer: wgpu::Buffer,
    /// Byte offset of element 0 in `buffer` (0 unless the tensor is a slice of an arena).
    offset: u64,
    pub len: usize,
    pub label: String,
}

impl Tensor {
    pub fn bytes(&self) -> u64 {
        (self.len * 4) as u64
    }

    /// Where element 0 lies in its buffer (non-zero for slices of an arena).
    pub fn offset_bytes(&self) -> u64 {
        self.offset
    }

    /// Where this tensor starts inside `whole`, in elements, if it is a slice of that
    /// (whole) buffer.
    pub fn element_offset_in(&self, whole: &Tensor) -> Option<usize> {
        (self.buffer == whole.buffer && whole.offset == 0).then_some(self.offset as usize / 4)
    }

    /// The `len` elements from `start` on as a tensor of their own. `start` must be a
    /// multiple of the adapter's storage-offset alignment (`Gpu::offset_alignment`).
    pub fn slice(&self, start: usize, len: usize, label: &str) -> Tensor {
        assert!(
            start + len <= self.len,
            "slice {start}+{len} of {}",
            self.len
        );
        Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset + start as u64 * 4,
            len,
            label: label.into(),
        }
    }

    /// Records a copy of the tensor's first `bytes` bytes into `dst` at offset 0.
    pub fn copy_into(&self, encoder: &mut wgpu::CommandEncoder, dst: &wgpu::Buffer, bytes: u64) {
        encoder.copy_buffer_to_buffer(&self.buffer, self.offset, dst, 0, bytes);
    }
}

/// What a kernel's bind group entry can be: a whole buffer (parameter structs) or a tensor
/// (its slice of its buffer).
pub trait Bindable {
    fn resource(&self) -> wgpu::BindingResource<'_>;
}

impl Bindable for wgpu::Buffer {
    fn resource(&self) -> wgpu::BindingResource<'_> {
        self.as_entire_binding()
    }
}

impl Bindable for Tensor {
    fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(padded_bytes(self.len)),
        })
    }
}

impl<T: Bindable + ?Sized> Bindable for &T {
    fn resource(&self) -> wgpu::BindingResource<'_> {
        (**self).resource()
    }
}

/// Tensors that live as aligned slices of one buffer, so one dispatch can update them all
/// (the optimizer): `whole` spans every slice and the zeros between them.
pub struct Arena {
    pub whole: Tensor,
    pub slices: Vec<Tensor>,
}

fn padded_bytes(len: usize) -> u64 {
    (len.max(1).div_ceil(4) * 16) as u64
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    fn check_size(&self, label: &str, size: u64) -> Result<()> {
        let binding = self.limits.max_storage_buffer_binding_size;
        if size > binding {
            return Err(GpuError::BufferTooLarge {
                label: label.into(),
                size,
                limit: binding,
                which: "in one storage binding",
            });
        }
        if size > self.limits.max_buffer_size {
            return Err(GpuError::BufferTooLarge {
                label: label.into(),
                size,
                limit: self.limits.max_buffer_size,
                which: "in one buffer",
            });
        }
        Ok(())
    }

    /// A zero-filled storage buffer of `len` 4-byte elements.
    pub fn zeros(&self, label: &str, len: usize) -> Result<Tensor> {
        // Padded to 16 bytes (vec4 views); zero-length bindings are invalid, so at least one vec4.
        let bytes = padded_bytes(len);
        self.check_size(label, bytes)?;
        self.zeroed_tensor(label, len, USAGE)
    }

    /// A zero-filled tensor that kernels write as storage and others read as a uniform
    /// table (small: weights every invocation reads at the same index, where a uniform
    /// load is far cheaper than a storage one on CPU adapters).
    pub fn uniform_table(&self, label: &str, len: usize) -> Result<Tensor> {
        let bytes = padded_bytes(len);
        if bytes > self.limits.max_uniform_buffer_binding_size {
            return Err(GpuError::BufferTooLarge {
                label: label.into(),
                size: bytes,
                limit: self.limits.max_uniform_buffer_binding_size,
                which: "in one uniform binding",
            });
        }
        self.zeroed_tensor(label, len, USAGE | wgpu::BufferUsages::UNIFORM)
    }

    fn zeroed_tensor(&self, label: &str, len: usize, usage: wgpu::BufferUsages) -> Result<Tensor> {
        let bytes = padded_bytes(len);
        let buffer = self.scoped(
            || format!("creating buffer '{label}' ({bytes} bytes)"),
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage,
                    mapped_at_creation: false,
                })
            },
        )?;
        Ok(Tensor {
            buffer,
            offset: 0,
            len,
            label: label.into(),
        })
    }

    /// The alignment of a slice's offset in bytes (`Tensor::slice`): the adapter's storage
    /// offset alignment, at least 16 (vec4 views).
    pub fn offset_alignment(&self) -> u64 {
        (self.limits.min_storage_buffer_offset_alignment as u64).max(16)
    }

    /// Zero-filled tensors of the given `(label, len)`s as slices of one buffer, each
    /// starting at the adapter's storage-offset alignment. The caller keeps the whole within
    /// one binding (`arena_fits`).
    pub fn arena(&self, label: &str, tensors: &[(String, usize)]) -> Result<Arena> {
        let align = self.offset_alignment();
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut end = 0u64;
        for (_, len) in tensors {
            offsets.push(end);
            end = (end + padded_bytes(*len)).next_multiple_of(align);
        }
        let whole = self.zeros(label, (end / 4) as usize)?;
        let slices = tensors
            .iter()
            .zip(offsets)
            .map(|((name, len), offset)| Tensor {
                buffer: whole.buffer.clone(),
                offset,
                len: *len,
                label: name.clone(),
            })
            .collect();
        Ok(Arena { whole, slices })
    }

    /// The bytes an arena of these tensor lengths takes, and whether it fits one binding.
    pub fn arena_fits(&self, lens: impl IntoIterator<Item = usize>) -> bool {
        let align = self.offset_alignment();
        let end: u64 = lens
            .into_iter()
            .map(|len| padded_bytes(len).next_multiple_of(align))
            .sum();
        self.check_size("arena", end).is_ok()
    }

    /// A storage buffer holding `data` (f32, u32 or any 4-byte Pod).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<Tensor> {
        assert_eq!(std::mem::size_of::<T>(), 4, "tensors hold 4-byte elements");
        let bytes = padded_bytes(data.len());
        self.check_size(label, bytes)?;
        if data.is_empty() {
            return self.zeros(label, 0);
        }
        let buffer = self.scoped(
            || format!("creating buffer '{label}' ({bytes} bytes)"),
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage: USAGE,
                    mapped_at_creation: true,
                })
            },
        )?;
        {
            let src: &[u8] = bytemuck::cast_slice(data);
            let mut view = buffer
                .slice(0..src.len() as u64)
                .get_mapped_range_mut()
                .map_err(|e| GpuError::Readback {
                    label: label.into(),
                    message: e.to_string(),
                })?;
            view.copy_from_slice(src);
        }
        buffer.unmap();
        Ok(Tensor {
            buffer,
            offset: 0,
            len: data.len(),
            label: label.into(),
        })
    }

    /// Overwrites the start of `tensor` with `data` (queued; ordered before later submits).
    pub fn write<T: bytemuck::Pod>(&self, tensor: &Tensor, data: &[T]) -> Result<()> {
        if data.len() > tensor.len.max(1) {
            return Err(GpuError::Shape {
                label: tensor.label.clone(),
                message: format!("writing {} elements into {}", data.len(), tensor.len),
            });
        }
        self.queue
            .write_buffer(&tensor.buffer, tensor.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrites elements starting at `offset` (in elements) of `tensor`.
    pub fn write_at<T: bytemuck::Pod>(
        &self,
        tensor: &Tensor,
        offset: usize,
        data: &[T],
    ) -> Result<()> {
        if offset + data.len() > tensor.len.max(1) {
            return Err(GpuError::Shape {
                label: tensor.label.clone(),
                message: format!(
                    "writing {} elements at {offset} into {}",
                    data.len(),
                    tensor.len
                ),
            });
        }
        self.queue.write_buffer(
            &tensor.buffer,
            tensor.offset + (offset * 4) as u64,
            bytemuck::cast_slice(data),
        );
        Ok(())
    }

    /// A uniform buffer holding one parameter struct.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// Copies `tensor` to the host, waiting for all queued work first.
    pub fn read<T: bytemuck::Pod>(&self, tensor: &Tensor) -> Result<Vec<T>> {
        pollster::block_on(self.read_async(tensor))
    }

    /// `read`, awaiting the buffer's mapping (what a browser needs; `read` blocks on it).
    pub async fn read_async<T: bytemuck::Pod>(&self, tensor: &Tensor) -> Result<Vec<T>> {
        let bytes = tensor.bytes();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        tensor.copy_into(&mut encoder, &staging, bytes);
        self.queue.submit([encoder.finish()]);
        let (deliver, mapped) = super::landing::landing();
        staging.slice(..).map_async(wgpu::MapMode::Read, deliver);
        // Natively the callback fires during a poll (ours, or another thread's on the same
        // device, which the await then waits for); a browser fires it from its event loop.
        #[cfg(not(target_arch = "wasm32"))]
        self.sync()?;
        mapped.await.map_err(|e| GpuError::Readback {
            label: tensor.label.clone(),
            message: e.to_string(),
        })?;
        #[cfg(target_arch = "wasm32")]
        self.take_uncaptured("GPU work")?;
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Readback {
                label: tensor.label.clone(),
                message: e.to_string(),
            })?;
        let out = bytemuck::cast_slice::<u8, T>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}
