//! Adapter discovery and selection: `--backend`, `--adapter SUBSTRING`, `--software`.

use super::{GpuError, Result};

/// Which graphics API to run on. `Auto` tries every backend compiled in.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl Backend {
    pub fn to_wgpu(self) -> wgpu::Backends {
        match self {
            Backend::Auto => wgpu::Backends::all(),
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Backend::Auto => "auto",
            Backend::Vulkan => "vulkan",
            Backend::Metal => "metal",
            Backend::Dx12 => "dx12",
            Backend::Gl => "gl",
        };
        f.write_str(s)
    }
}

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    pub backend: Backend,
    /// Case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Only software (CPU) adapters: lavapipe, WARP, llvmpipe.
    pub software: bool,
    /// Kernel variant to use wherever it applies (`--variant`).
    pub variant: super::Variant,
}

impl AdapterRequest {
    fn describe(&self) -> String {
        let mut parts = vec![format!("--backend {}", self.backend)];
        if let Some(name) = &self.adapter {
            parts.push(format!("--adapter '{name}'"));
        }
        if self.software {
            parts.push("--software".into());
        }
        parts.join(" ")
    }
}

/// One adapter as `devices` lists it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The largest device-local memory heap, where the backend reports it (`device_memory`).
    pub memory: Option<u64>,
}

/// Mesa's WSI layer prints "XDG_RUNTIME_DIR is invalid or not set" on every instance
/// creation when the variable is missing (CI, ssh, containers). We never present to a
/// window, so point it at a private directory of our own before any driver loads.
pub(crate) fn quiet_driver_noise() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let valid = std::env::var_os("XDG_RUNTIME_DIR")
                .map(std::path::PathBuf::from)
                .is_some_and(|p| p.is_dir());
            if !valid {
                let dir =
                    std::env::temp_dir().join(format!("wgpu-fmnist-runtime-{}", unsafe_uid()));
                if std::fs::create_dir_all(&dir).is_ok() {
                    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                    // Called before any other thread of ours touches the environment.
                    std::env::set_var("XDG_RUNTIME_DIR", &dir);
                }
            }
        }
    });
}

#[cfg(unix)]
fn unsafe_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of our own home-less temp dir is a good enough stand-in for getuid()
    // without a libc dependency.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    // Validation layers only when the user asks through WGPU_* variables.
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

fn enumerate(backend: Backend) -> Vec<wgpu::Adapter> {
    quiet_driver_noise();
    let inst = instance(backend.to_wgpu());
    pollster::block_on(inst.enumerate_adapters(backend.to_wgpu()))
}

/// Every adapter on `backend`, for `wgpu-fmnist devices`.
pub fn list_adapters(backend: Backend) -> Vec<AdapterSummary> {
    enumerate(backend)
        .into_iter()
        .map(|a| AdapterSummary {
            info: a.get_info(),
            limits: a.limits(),
            features: a.features(),
            memory: device_memory(&a),
        })
        .collect()
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    // Compute through GL is the last resort: it lacks timestamps and has tight limits.
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, api)
}

pub(crate) fn select(request: &AdapterRequest) -> Result<wgpu::Adapter> {
    let all = enumerate(request.backend);
    let found = if all.is_empty() {
        "none".to_string()
    } else {
        all.iter()
            .map(|a| {
                let i = a.get_info();
                format!("'{}' ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut candidates: Vec<wgpu::Adapter> = all
        .into_iter()
        .filter(|a| {
            let i = a.get_info();
            let name_ok = request
                .adapter
                .as_ref()
                .is_none_or(|s| i.name.to_lowercase().contains(&s.to_lowercase()));
            let soft_ok = !request.software || i.device_type == wgpu::DeviceType::Cpu;
            name_ok && soft_ok
        })
        .collect();
    candidates.sort_by_key(|a| rank(&a.get_info()));
    candidates.into_iter().next().ok_or_else(|| GpuError::NoAdapter {
        wanted: request.describe(),
        found,
        hint: "Without a GPU, install a software Vulkan driver: `apt-get install mesa-vulkan-drivers` \
               (lavapipe) on Debian/Ubuntu; Windows ships WARP (use --backend dx12 --software). \
               `wgpu-fmnist devices` lists what is available."
            .into(),
    })
}

/// The adapters of `backend`; none at all is an error that says how to get one.
pub fn require_adapters(backend: Backend) -> Result<Vec<AdapterSummary>> {
    let adapters = list_adapters(backend);
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter {
            wanted: format!("--backend {backend}"),
            found: "none".into(),
            hint: "Without a GPU, install a software Vulkan driver: `apt-get install mesa-vulkan-drivers` (lavapipe).".into(),
        });
    }
    Ok(adapters)
}

/// The adapter's memory for buffers: the largest device-local heap (on a discrete GPU its
/// VRAM; on integrated and software adapters the share of system memory the driver offers).
/// Only Vulkan reports heaps through wgpu; None elsewhere, where nothing is refused up front.
pub fn device_memory(adapter: &wgpu::Adapter) -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "windows", target_os = "android"))]
    {
        // SAFETY: only reads properties of the physical device; nothing is created or
        // destroyed, and the guard is dropped before the adapter is used again.
        let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
        let instance = hal.shared_instance().raw_instance();
        let props =
            unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
        // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
        const DEVICE_LOCAL: u32 = 0x1;
        props
            .memory_heaps_as_slice()
            .iter()
            .filter(|h| h.flags.as_raw() & DEVICE_LOCAL != 0)
            .map(|h| h.size)
            .max()
    }
    #[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "android")))]
    {
        let _ = adapter;
        None
    }
}
