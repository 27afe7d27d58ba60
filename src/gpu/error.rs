//! Typed GPU errors. Each names what was being done so a user knows which kernel, buffer or
//! adapter failed and what to change.

use thiserror::Error;

pub type Result<T, E = GpuError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum GpuError {
    #[error("no GPU adapter matches {wanted}.\n  adapters found: {found}\n  {hint}")]
    NoAdapter {
        wanted: String,
        found: String,
        hint: String,
    },

    #[error("adapter '{adapter}' is too small: it lacks {what}")]
    AdapterTooSmall { adapter: String, what: String },

    #[error("could not create a device on '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },

    #[error(
        "buffer '{label}' needs {size} bytes but the adapter allows at most {limit} bytes {which}; \
         use a smaller --batch-size"
    )]
    BufferTooLarge {
        label: String,
        size: u64,
        limit: u64,
        which: &'static str,
    },

    #[error(
        "{what} at batch {batch} needs {size} bytes but the adapter allows at most {limit} \
         bytes in one storage binding; use a smaller {flag}"
    )]
    BatchTooLarge {
        what: String,
        batch: usize,
        size: u64,
        limit: u64,
        flag: &'static str,
    },

    #[error(
        "{what} needs about {} of GPU memory ({parts}) but the adapter '{adapter}' has {}; \
         use a smaller {flag}", gib(*need), gib(*have)
    )]
    OutOfDeviceMemory {
        what: String,
        parts: String,
        need: u64,
        have: u64,
        adapter: String,
        flag: &'static str,
    },

    #[error(
        "layer {layer} has {params} parameters ({bytes} bytes), more than the adapter allows \
         in one storage binding ({limit} bytes); make the layer smaller"
    )]
    ModelTooLarge {
        layer: String,
        params: usize,
        bytes: u64,
        limit: u64,
    },

    #[error("dispatch of '{kernel}' needs {groups} workgroups in one dimension, more than the adapter's {limit}")]
    DispatchTooLarge {
        kernel: String,
        groups: u64,
        limit: u32,
    },

    #[error(
        "--augment samples the training images from a texture: {images} images need more than \
         the adapter's {layers} layers of {side}x{side} texels; train on fewer (--limit-train)"
    )]
    AtlasTooLarge {
        images: usize,
        side: u32,
        layers: u32,
    },

    #[error("--variant {variant} cannot run on '{adapter}': {why}")]
    VariantUnsupported {
        variant: String,
        adapter: String,
        why: String,
    },

    #[error("GPU validation error in {context}: {message}")]
    Validation { context: String, message: String },

    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory { context: String, message: String },

    #[error("GPU device lost or hung while {context}: {message}")]
    Lost { context: String, message: String },

    #[error("reading back buffer '{label}' failed: {message}")]
    Readback { label: String, message: String },

    #[error("tensor '{label}': {message}")]
    Shape { label: String, message: String },
}

/// Bytes as GiB with one decimal (MiB below 1 GiB), for memory errors.
pub(crate) fn gib(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", n.div_ceil(1 << 20))
    }
}
